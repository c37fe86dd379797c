"""RA-BNN Early-Growth (Rakin et al., arXiv 2103.13813): widen a binary network, then retrain it.

Two stages, each trained through ``ctx.fit``:

1. *Growing*: every channel group of the binary model (a residual stage of
   ``bireal_resnet*``, a layer of ``binary_vgg_small``) is widened to
   ``ceil(grow_factor * width)`` candidate channels; the base channels keep their trained
   weights, the new ones start freshly initialized. Each candidate channel ``c`` has a
   trainable logit ``a_c`` and a mask drawn through a Gumbel-Sigmoid,
   ``s_c = sigmoid((a_c + log u - log(1 - u)) / T)``, ``u ~ U(0, 1)``, thresholded at 0.5 in
   the forward pass (hard 0/1) with the straight-through gradient ``d s_c / d a_c`` in the
   backward pass. The group's feature maps are multiplied by the mask, and the loss is
   cross-entropy plus ``l1 * sum_c m_c`` (an L1 penalty on active candidate channels),
   so a channel opens only when it lowers the loss by more than it costs.
2. *Re-training*: the kept channels (``a_c > 0``, i.e. the noise-free mask is 1) define
   the grown widths; a model of those widths is built and trained again.

Reconstructed where the paper is silent (stated here so results can be judged):
the candidate pool size (``grow_factor``, default 2), the mask initialisation (new
channels at logit ``init_logit = 0``, i.e. open with probability 1/2), the temperature
(``T = 1``, constant), the gate learning rate (the gates' gradients are multiplied by
``gate_lr_scale`` so that the logits move on the few-epoch growth schedule), base channels
always kept (``prune_base: false``; growth only adds), the penalty as a sum over
candidate channels, and the re-training start (``retrain_init: inherit`` copies the kept
channels' weights; ``scratch`` re-initializes the grown model). Because masks act on
whole residual streams, a Bi-Real ResNet grows per stage (its convs share the stage's
channels through the real-valued shortcuts).

The grown widths are decided by training: they are logged as
``ctx.log["ra_bnn"]["grown_widths"]`` and read back from the stored tensors' shapes by
``prepare_for_state`` (checkpoints pass their state_dict, packed exports a shape-only
one), so the structure is rebuilt at the grown widths before any later step (masks,
quantizers) is prepared on it. ``prepare`` alone returns the base model, which still
adopts a grown state_dict's widths in ``load_state_dict``. ``widths: [...]`` skips
growing and builds (and retrains) exactly that architecture.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Dict, List, Literal, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.method import TrainingContext, TrainingMethod, require_training
from ...core.params import rng
from ...core.registry import CALLBACKS, METHODS
from ...core.callbacks import Callback, TrainState


class GumbelSigmoidGate(nn.Module):
    """Channel mask: hard Gumbel-Sigmoid sample in training, ``a > 0`` in eval; STE backward.

    Args:
        channels: number of candidate channels.
        fixed: number of leading channels that are always on (the base channels).
        init_logit: initial logit of the other channels.
        temperature: ``T``.
    """

    def __init__(self, channels: int, fixed: int = 0, init_logit: float = 0.0, temperature: float = 1.0) -> None:
        super().__init__()
        if not 0 <= fixed <= channels:
            raise ValueError(f"fixed must be in [0, {channels}], got {fixed}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        logits = torch.full((channels,), float(init_logit))
        logits[:fixed] = 3.0
        self.logits = nn.Parameter(logits)
        fixed_mask = torch.zeros(channels, dtype=torch.bool)
        fixed_mask[:fixed] = True
        self.register_buffer("fixed", fixed_mask)
        self.last: Optional[Tensor] = None

    def forward(self) -> Tensor:
        a = self.logits
        if self.training:
            u = torch.rand_like(a).clamp(1e-6, 1 - 1e-6)
            a = a + torch.log(u) - torch.log1p(-u)
        s = torch.sigmoid(a / self.temperature)
        m = (s > 0.5).to(s.dtype) + (s - s.detach())  # exactly 0 or 1 forward, ds/da backward
        m = torch.where(self.fixed, torch.ones_like(m), m)
        self.last = m
        return m

    def kept(self) -> Tensor:
        """Indices of the channels kept after growing (fixed ones and logit > 0)."""
        return torch.nonzero(self.fixed | (self.logits.detach() > 0)).flatten()


def _gates(model: nn.Module) -> List[GumbelSigmoidGate]:
    return [m for m in model.modules() if isinstance(m, GumbelSigmoidGate)]


@dataclass(frozen=True)
class RAGrowthPenaltyParams:
    l1: float = rng(0, None, default=2e-3)
    gate_lr_scale: float = rng(0, None, "(]", default=50.0)


@CALLBACKS.register("ra_bnn_penalty", params=RAGrowthPenaltyParams)
class RAGrowthPenalty(Callback):
    """Loss = cross-entropy + ``l1`` * number of active candidate channels (STE through the masks)."""

    def __init__(self, l1: float = 2e-3, gate_lr_scale: float = 50.0) -> None:
        if l1 < 0 or gate_lr_scale <= 0:
            raise ValueError(f"need l1 >= 0 and gate_lr_scale > 0, got {l1}, {gate_lr_scale}")
        self.l1, self.gate_lr_scale = float(l1), float(gate_lr_scale)

    def on_train_begin(self, state: TrainState) -> None:
        if not _gates(state.model):
            raise ValueError("ra_bnn_penalty: the model has no growth gates")

    def compute_loss(self, state: TrainState) -> Optional[Tensor]:
        state.logits = state.model(state.x)
        loss = F.cross_entropy(state.logits, state.y, label_smoothing=state.config.label_smoothing)
        pen = sum(g.last[~g.fixed].sum() for g in _gates(state.model) if g.last is not None)
        return loss + self.l1 * pen

    def on_after_backward(self, state: TrainState) -> None:
        for g in _gates(state.model):
            if g.logits.grad is not None:
                g.logits.grad.mul_(self.gate_lr_scale)

    def on_epoch_end(self, state: TrainState) -> None:
        gates = _gates(state.model)
        state.log["ra_bnn_widths"] = [int(g.kept().numel()) for g in gates]  # type: ignore[assignment]


# -- copying channels between models of the same kind and different widths --------------------

def channel_map(model: nn.Module) -> Dict[str, List[Tuple[int, int, int]]]:
    """(dim, group, repeat) of every group-sized dim of each state_dict entry (see ``BinaryNet.channel_map``)."""
    _check_growable(model)
    return model.channel_map()


def _expand(idx: Tensor, rep: int) -> Tensor:
    return (idx.view(-1, 1) * rep + torch.arange(rep, device=idx.device)).flatten() if rep > 1 else idx


def _put(t: Tensor, maps: Sequence[Tuple[int, int, int]], idx: Sequence[Tensor], sub: Tensor) -> None:
    if not maps:
        t.copy_(sub)
        return
    d, g, rep = maps[0]
    i = _expand(idx[g].to(t.device), rep)
    part = t.index_select(d, i)
    _put(part, maps[1:], idx, sub)
    t.index_copy_(d, i, part)


@torch.no_grad()
def copy_channels(src: nn.Module, dst: nn.Module, src_idx: Sequence[Tensor], dst_idx: Sequence[Tensor]) -> None:
    """Copy channels ``src_idx[g]`` of every group of ``src`` into channels ``dst_idx[g]`` of ``dst``.

    Tensors without group-sized dims (the stem's input side, the classifier's output,
    normalization) are copied whole. Gates are not copied.
    """
    cmap = channel_map(dst)
    sd_src = src.state_dict()
    for name, t in dst.state_dict().items():
        if name not in sd_src:
            raise ValueError(f"copy_channels: {name} is missing in the source model")
        s = sd_src[name].to(t.device)
        maps = cmap.get(name, [])
        for d, g, rep in maps:
            s = s.index_select(d, _expand(src_idx[g].to(s.device), rep))
        if s.shape != t.shape and not maps:
            raise ValueError(f"copy_channels: {name} has shape {tuple(s.shape)} in the source, {tuple(t.shape)} here")
        _put(t, maps, dst_idx, s.to(t.dtype))


# -- the method ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RABNNParams:
    grow_factor: float = rng(1, None, "(]", default=2.0)
    grow_epochs: int = rng(1, None, default=2)
    retrain_epochs: int = rng(0, None, default=8)
    lr: Optional[float] = rng(0, None, "(]", default=None)  # None: the recipe's training lr
    l1: float = rng(0, None, default=2e-3)
    temperature: float = rng(0, None, "()", default=1.0)
    init_logit: float = 0.0
    gate_lr_scale: float = rng(0, None, "(]", default=50.0)
    prune_base: bool = False
    retrain_init: Literal["inherit", "scratch"] = "inherit"
    widths: Optional[Tuple[int, ...]] = rng(1, None, default=None)  # skip growing, build these widths


def _check_growable(model: nn.Module) -> None:
    if not all(hasattr(model, a) for a in ("rebuild", "set_gates", "widths", "build_args", "channel_map")):
        raise ValueError("ra_bnn.grow needs a growable binary model (bireal_resnet20, bireal_resnet18, "
                         f"binary_vgg_small), got {type(model).__name__}")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@METHODS.register("ra_bnn.grow", params=RABNNParams)
class RABNNGrow(TrainingMethod):
    """RA-BNN Early-Growth: Gumbel-Sigmoid channel growth, then re-training of the grown BNN."""

    def prepare(self, model: nn.Module, params: RABNNParams) -> nn.Module:
        _check_growable(model)
        if params.widths is None:  # widths come from the checkpoint (BinaryNet.load_state_dict)
            return copy.deepcopy(model)
        return model.rebuild(params.widths).to(_device(model))

    def prepare_for_state(self, model: nn.Module, params: RABNNParams, state_dict: Mapping[str, Tensor]) -> nn.Module:
        """The grown structure: the group widths the state_dict's tensors have (only their
        shapes are read, so a shape-only ``meta`` state_dict works)."""
        _check_growable(model)
        widths = model.widths_of(state_dict)
        if params.widths is not None and tuple(params.widths) != widths:
            raise ValueError(f"ra_bnn.grow: widths {list(params.widths)} were asked for, but the stored "
                             f"tensors have widths {list(widths)}")
        return model.rebuild(widths).to(_device(model))

    def grow(self, model: nn.Module, params: RABNNParams, ctx: TrainingContext) -> Tuple[nn.Module, dict]:
        """Stage 1: train a widened, gated copy; returns (candidate without gates, log)."""
        base_w = tuple(model.widths)
        cand_w = tuple(max(w + 1, math.ceil(params.grow_factor * w)) for w in base_w)
        cand = model.rebuild(cand_w).to(_device(model))
        keep = [torch.arange(w) for w in base_w]
        copy_channels(model, cand, keep, keep)
        fixed = [0 if params.prune_base else w for w in base_w]
        gates = [GumbelSigmoidGate(c, f, params.init_logit, params.temperature) for c, f in zip(cand_w, fixed)]
        cand.set_gates(gates)
        cand.to(_device(model))
        cfg = self._config(ctx, params.grow_epochs, params.lr)
        hist = ctx.fit(cand, cfg, callbacks=[RAGrowthPenalty(params.l1, params.gate_lr_scale)])
        kept = [g.kept() for g in cand.gates]
        cand.set_gates(None)
        return cand, {"candidate_widths": list(cand_w), "kept": kept, "grow_history": hist}

    @staticmethod
    def _config(ctx: TrainingContext, epochs: int, lr: Optional[float]):
        return ctx.finetune(epochs, {"lr": lr if lr is not None else ctx.train.lr}, "ra_bnn")

    def apply(self, model: nn.Module, params: RABNNParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "ra_bnn.grow")
        _check_growable(model)
        model = copy.deepcopy(model)
        log: dict = {"base_widths": list(model.widths)}
        if params.widths is None:
            src, info = self.grow(model, params, ctx)
            kept = info.pop("kept")
            log.update(info)
            widths = [max(1, int(k.numel())) for k in kept]
            kept = [k if k.numel() else torch.zeros(1, dtype=torch.long) for k in kept]
        else:  # the asked widths; the first min(base, asked) channels inherit the base weights
            src = model
            widths = list(params.widths)
            kept = [torch.arange(min(a, b)) for a, b in zip(model.widths, widths)]
        torch.manual_seed(ctx.seed)
        grown = model.rebuild(widths).to(_device(model))
        if params.retrain_init == "inherit":
            copy_channels(src, grown, kept, [torch.arange(k.numel()) for k in kept])
        log["grown_widths"] = widths
        if params.retrain_epochs > 0:
            from .binarize import binary_callbacks

            cfg = self._config(ctx, params.retrain_epochs, params.lr)
            est = {q.estimator for q in grown.modules() if hasattr(q, "estimator")}
            cbs = binary_callbacks("reste" if "reste" in est else "clipped_ste", None, False)
            log["retrain_history"] = ctx.fit(grown, cfg, callbacks=cbs)
        ctx.log["ra_bnn"] = log
        return grown
