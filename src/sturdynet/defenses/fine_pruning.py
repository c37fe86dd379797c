"""Fine-Pruning: Liu, Dolan-Gavitt & Garg, "Fine-Pruning: Defending Against Backdooring
Attacks on Deep Neural Networks" (arXiv 1805.12185).

The defender runs clean data through the model, records the mean activation of every
channel of the last convolutional layer, removes channels in increasing order of that
activation (dormant channels first: those the backdoor tends to use) and stops before
the clean accuracy drops by more than ``max_accuracy_drop`` or when ``amount`` of the
layer's channels are gone; then the pruned model is fine-tuned on clean data.

Clean data is the run's validation split (poisoning touches only the training split,
see :mod:`sturdynet.data.poison`): activations and the accuracy limit use it, and so
does fine-tuning unless ``finetune_on: train`` (which trains on the possibly poisoned
training split, as a variant's ``finetune_epochs`` would).

Two engines find the layer and what shrinks with it (``engine``, as in ``prune.structured``):

* ``modules`` (sturdynet's built-in models under ``auto``): the module-pattern channel
  groups of :mod:`sturdynet.prune.channel_groups`; the channel's filter, bias and batch-
  norm affine terms are masked, then (``physical: true``) the channels are removed by
  :mod:`sturdynet.prune.structured`. The layer is the last conv that is a group producer:
  in residual networks the last block's first conv (channels of the residual stream are
  never pruned by this engine), not the very last conv.
* ``graph`` (every other network under ``auto``: torchvision, timm, factories, wrapped
  networks): :mod:`sturdynet.defenses.fine_pruning_graph` traces the network with the
  dependency graph and takes the last conv in execution order whose coupled channel group
  is prunable, not tied to the network's input or output and not a residual stream (in a
  residual network: the last block's last inner conv, as above). Naming a conv of a residual
  stream in ``layer`` prunes the stream, each channel removed from every coupled layer
  (all convs and batch norms adding into it, the shortcut's included, and every reader).

Deviations: a channel's activation is measured where the next layer reads it (after the
nonlinearity, any residual add and pooling in between), not at the conv output; in
residual networks both engines prune the last block's last inner conv by default, not the very
last conv, whose channels are the residual stream (see above).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.callbacks import Callback, TrainState
from ..core.method import TrainingContext, TrainingMethod, require_training
from ..core.tensors import predict
from ..core.params import rng
from ..data.base import DataBundle, Split
from ..prune.channel_groups import ChannelGroup, out_channels
from ..prune.coupled import masks_from_state
from ..prune.graph import resize_to_shapes
from ..core.masks import get_masks
from ..prune.structured import compact, mask_channels, prunable_groups, resize_to_state_dict
from ..core.registry import METHODS
from ..train.loop import evaluate_accuracy
from .fine_pruning_graph import fine_prune_graph, search_pruned

NAME = "prune.fine_pruning"


@dataclass(frozen=True)
class FinePruningParams:
    """``amount``: most channels removed (fraction of the layer); ``max_accuracy_drop``:
    stop before clean accuracy falls by more (None: remove exactly ``amount``);
    ``layer``: the producer to prune (default: the last prunable conv); ``samples``: clean
    validation images used (default all); ``epochs``: fine-tuning epochs after pruning (at
    a tenth of the base learning rate unless ``lr``) on ``finetune_on`` data, with the batch-norm
    running statistics ``bn_stats``: ``frozen`` (kept from the delivered model; the affine terms
    still train) or ``train`` (re-estimated on the fine-tuning data). A variant's own
    ``finetune_epochs`` is a different thing: it trains afterwards on the training split.
    ``engine``: ``modules`` (module-pattern channel groups), ``graph`` (any traced network),
    ``auto`` (``modules`` for sturdynet's built-in models, ``graph`` otherwise)."""

    amount: float = rng(0, 1, "[)", default=0.9)
    max_accuracy_drop: Optional[float] = rng(0, 1, "[]", default=0.04)
    layer: Optional[str] = None
    samples: Optional[int] = rng(1, None, default=None)
    epochs: int = rng(0, None, default=2)
    finetune_on: Literal["val", "train"] = "val"
    lr: Optional[float] = rng(0, None, "(]", default=None)
    min_channels: int = rng(1, None, default=1)
    physical: bool = True
    bn_stats: Literal["train", "frozen"] = "train"
    engine: Literal["auto", "modules", "graph"] = "auto"


def engine_for(model: nn.Module, params: FinePruningParams) -> str:
    """``modules`` or ``graph``: ``auto`` picks ``modules`` for sturdynet's built-in models only."""
    if params.engine != "auto":
        return params.engine
    return "modules" if getattr(model, "sturdynet_model", None) else "graph"


def pick_group(model: nn.Module, layer: Optional[str]) -> ChannelGroup:
    """The channel group of ``layer``, or of the last prunable conv layer."""
    groups = prunable_groups(model)
    if layer is not None:
        found = [g for g in groups if g.producer == layer]
        if not found:
            raise ValueError(f"layer: {layer!r} is not a prunable channel group; "
                             f"choose one of {', '.join(g.producer for g in groups)}")
        return found[0]
    convs = [g for g in groups if isinstance(model.get_submodule(g.producer), nn.Conv2d)]
    if not convs:
        raise ValueError("fine-pruning needs a prunable convolution layer; the model has none")
    return convs[-1]


def _channels(x: Tensor, c: int) -> Tensor:
    """The consumer's input as (N, C, positions): channel c owns the c-th slice."""
    return x.reshape(x.shape[0], c, -1)


@torch.no_grad()
def mean_activations(model: nn.Module, group: ChannelGroup, x: Tensor, batch_size: int = 512) -> Tensor:
    """Mean activation of each channel of ``group`` over images ``x``, taken at the input
    of the layer that reads the channels (float64, one value per channel)."""
    c = out_channels(model.get_submodule(group.producer))
    total = torch.zeros(c, dtype=torch.float64)
    consumer = model.get_submodule(group.consumers[0][0])

    def record(_m: nn.Module, inp: Tuple[Tensor, ...]) -> None:
        total.add_(_channels(inp[0], c).double().mean(2).sum(0).cpu())

    hook = consumer.register_forward_pre_hook(record)
    try:
        predict(model, x, batch_size)  # the hook records; the logits are not needed
    finally:
        hook.remove()
    return total / max(1, len(x))


def accuracy_without(model: nn.Module, group: ChannelGroup, dead: Tensor, split: Split) -> float:
    """Clean accuracy with the channels ``dead`` (boolean) silenced at the consumer's input,
    which is what masking them computes (every layer in between maps zero to zero)."""
    keep = (~dead).double()
    consumer = model.get_submodule(group.consumers[0][0])

    def silence(_m: nn.Module, inp: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        x = inp[0]
        k = keep.to(device=x.device, dtype=x.dtype).view(1, -1, 1)
        return ((_channels(x, keep.numel()) * k).reshape(x.shape),) + tuple(inp[1:])

    hook = consumer.register_forward_pre_hook(silence)
    try:
        return evaluate_accuracy(model, split)["accuracy"]
    finally:
        hook.remove()


def prune_order(model: nn.Module, group: ChannelGroup, params: FinePruningParams,
                clean: Split) -> Tuple[Tensor, Dict[str, Any]]:
    """The boolean keep vector of ``group`` and the search's report (see the module docstring)."""
    keep, found = search_pruned(mean_activations(model, group, clean.x), params.amount, params.max_accuracy_drop,
                                params.min_channels, evaluate_accuracy(model, clean)["accuracy"],
                                lambda dead: accuracy_without(model, group, dead, clean))
    return keep, {"layer": group.producer, **found}


def _clean_split(ctx: TrainingContext, samples: Optional[int]) -> Split:
    data = ctx.data
    if not len(data.val):
        raise ValueError(f"{NAME} needs a clean validation split; set data.val_fraction > 0")
    return data.val.take(samples)


class FrozenBNStats(Callback):
    """Keeps every batch-norm layer in eval mode during training: its running statistics stay
    those of the delivered model (its affine weight and bias still learn)."""

    def on_epoch_begin(self, state: TrainState) -> None:
        for m in state.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _finetune(model: nn.Module, params: FinePruningParams, ctx: TrainingContext, clean: Split) -> list:
    cfg = ctx.finetune(params.epochs, {"lr": params.lr} if params.lr else None, NAME)
    cbs = [FrozenBNStats()] if params.bn_stats == "frozen" else []
    if params.finetune_on == "train":
        return ctx.fit(model, cfg, callbacks=cbs)
    empty = Split(clean.x[:0], clean.y[:0])
    data: DataBundle = dataclasses.replace(ctx.data, train=clean, val=empty)
    return ctx.fit(model, cfg, data=data, seed=ctx.seed, callbacks=cbs)


@METHODS.register(NAME, params=FinePruningParams)
class FinePruning(TrainingMethod):
    """Prune the last conv layer's dormant channels on clean data, then fine-tune (arXiv 1805.12185)."""

    def apply(self, model: nn.Module, params: FinePruningParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, NAME)
        clean = _clean_split(ctx, params.samples)
        if engine_for(model, params) == "graph":
            out, report = fine_prune_graph(model, params, clean)
        else:
            masked = copy.deepcopy(model)
            group = pick_group(masked, params.layer)
            keep, report = prune_order(masked, group, params, clean)
            with torch.no_grad():
                mask_channels(masked, [group], {group.producer: keep})
            out = compact(masked, set(get_masks(model))) if params.physical else masked
        if params.epochs > 0:
            report["finetune_history"] = _finetune(out, params, ctx, clean)
            report["clean_accuracy_finetuned"] = evaluate_accuracy(out, clean)["accuracy"]
        report["params_before"] = sum(p.numel() for p in model.parameters())
        report["params_after"] = sum(p.numel() for p in out.parameters())
        ctx.log[NAME] = report
        return out

    def prepare(self, model: nn.Module, params: FinePruningParams) -> nn.Module:
        """The masked structure (``physical: false``); the physical one needs the checkpoint."""
        if params.physical or engine_for(model, params) == "graph":
            raise ValueError(f"{NAME} chooses its channels from data; use prepare_for_state with the checkpoint")
        model = copy.deepcopy(model)
        group = pick_group(model, params.layer)
        with torch.no_grad():
            mask_channels(model, [group], {group.producer: torch.ones(out_channels(model.get_submodule(group.producer)), dtype=torch.bool)})
        return model

    def prepare_for_state(self, model: nn.Module, params: FinePruningParams, state_dict) -> nn.Module:
        """The structure of a checkpoint: the channel counts (graph engine: every layer's
        shapes, or where the masks are) are read from ``state_dict``."""
        if engine_for(model, params) == "graph":
            return resize_to_shapes(model, state_dict) if params.physical else masks_from_state(model, state_dict)
        return resize_to_state_dict(model, state_dict) if params.physical else self.prepare(model, params)
