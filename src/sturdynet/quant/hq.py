"""Hyperspherical Quantization (HQ; Liu, Chen, Ma, Liu, WACV 2023, arXiv 2212.12653).

HQ makes ternary quantization's straight-through estimator less biased by shrinking the
*cosine distance* between each layer's full-precision weights ``w`` and their ternary
version before (and while) quantizing. It combines three steps, done here by
``quant.hq``:

1. **Hyperspherical learning with a ternary-aligned regularizer, plus pruning.** For a
   layer with target sparsity ``s``, the ternary-aligned direction of ``w`` is
   ``t(w) = sign(w) * keep(w)``, ``keep`` = the ``(1 - s)`` largest ``|w|``. Its cosine
   distance ``d(w) = 1 - <w, t> / (||w|| ||t||)`` depends only on the direction of ``w``
   (a point on the hypersphere), and is 0 exactly when the kept weights share one
   magnitude and the others are zero. Training adds ``reg * sum_l d(w_l)`` to the loss
   (its exact gradient, ``t`` held constant, is added after backward by the callback
   ``hq_regularizer``, so it composes with any loss), and magnitude pruning raises each
   layer's sparsity to ``s`` on a cubic schedule (Zhu & Gupta, arXiv 1710.01878) over
   the first ``prune_until`` of the phase; the masks keep pruned weights at zero.
2. **Reinitialization.** The surviving latent weights are reset to their ternary-aligned
   point, ``w <- mean(|w_kept|) * t(w)`` (cosine distance 0), so STE training starts from
   weights the ternary quantizer represents exactly.
3. **Ternary quantization with the STE.** The layers become TTQ layers
   (:class:`~sturdynet.quant.ternary.TTQQuantizer`, the same machinery as
   ``quant.ternary``): pruned weights stay exactly zero (their masks stay attached), the
   rest map to ``+W_p`` / ``-W_n``; the variant's ``finetune_epochs`` train latent weights
   and scales with the straight-through gradient.

Deviations (stated): the paper normalizes the weights onto the unit hypersphere inside
the layer during step 1; here every quantized layer is followed by batch norm (or is the
kept-float last layer), which makes the layer's output invariant to the weight norm, so
only the direction is learned and the regularizer is measured on the sphere (the cosine)
instead of reparametrizing the layer. The paper uses one symmetric scale per layer;
step 3 keeps TTQ's two learned scales (a superset) so the trained ternary layers are
identical in kind to ``quant.ternary``'s. The paper's pruning ratios and regularization
weight are tuned per network; the defaults here (``sparsity=0.5``, ``reg=1.0``) are
this project's, chosen on digits.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.callbacks import Callback, TrainState
from ..core.masks import attach_mask
from ..core.method import TrainingContext, TrainingMethod, require_training
from ..core.params import Component, rng
from ..core.registry import CALLBACKS, METHODS
from .layers import quantizable
from .ternary import TernaryParams, TernaryQuant, TTQQuantizer


def keep_mask(w: Tensor, sparsity: float) -> Tensor:
    """Boolean mask of the ``round((1 - sparsity) * n)`` largest ``|w|`` (ties: earlier wins)."""
    flat = w.detach().abs().flatten()
    k = int(round((1.0 - sparsity) * flat.numel()))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    return keep.view_as(w)


def ternary_target(w: Tensor, sparsity: float) -> Tensor:
    """The ternary-aligned direction ``sign(w) * keep(w)`` in {-1, 0, +1}."""
    return torch.sign(w.detach()) * keep_mask(w, sparsity).to(w.dtype)


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - cos(a, b)`` of two tensors seen as vectors (1 when either is zero)."""
    a, b = a.flatten(), b.flatten()
    den = a.norm() * b.norm()
    if float(den.detach()) == 0.0:
        return a.new_ones(())
    return 1.0 - (a @ b) / den


@torch.no_grad()
def ternary_cosine_distance(model: nn.Module) -> float:
    """Mean over the model's ternary (TTQ/HQ) layers of ``1 - cos(w, deployed(w))``, the
    discrepancy HQ reduces (``w``: latent full-precision weights)."""
    ds = [float(cosine_distance(m.weight, m.weight_quantizer.quantize(m.weight)))
          for m in model.modules() if isinstance(getattr(m, "weight_quantizer", None), TTQQuantizer)]
    if not ds:
        raise ValueError("model has no ternary (quant.ternary / quant.hq) layers")
    return sum(ds) / len(ds)


@torch.no_grad()
def _mean_distance(layers: List[nn.Module], sparsity: float) -> float:
    ds = [float(cosine_distance(m.weight, ternary_target(m.weight, sparsity))) for m in layers]
    return sum(ds) / max(1, len(ds))


def hq_layers(model: nn.Module, quantize_first: bool = False, quantize_last: bool = False) -> List[Tuple[str, nn.Module]]:
    """The float conv/linear layers HQ regularizes, prunes and ternarizes."""
    return quantizable(model, skip_first=not quantize_first, skip_last=not quantize_last)


@dataclass(frozen=True)
class HQRegularizerParams:
    """Parameters of the ``hq_regularizer`` callback.

    Attributes:
        reg: weight of the summed cosine distances in the loss.
        sparsity: target fraction of zeros of every regularized layer.
        prune_until: fraction of the training by which the pruning reaches ``sparsity``
            (0: prune to ``sparsity`` at the first step; no pruning masks when ``sparsity`` is 0).
        quantize_first, quantize_last: also regularize the first / last conv-linear.
    """

    reg: float = rng(0, None, default=1.0)
    sparsity: float = rng(0, 1, "[)", default=0.5)
    prune_until: float = rng(0, 1, "[]", default=0.5)
    quantize_first: bool = False
    quantize_last: bool = False


@CALLBACKS.register("hq_regularizer", params=HQRegularizerParams)
class HypersphericalRegularizer(Callback):
    """HQ's step 1: the ternary-aligned cosine regularizer and gradual magnitude pruning."""

    def __init__(self, reg: float = 1.0, sparsity: float = 0.5, prune_until: float = 0.5,
                 quantize_first: bool = False, quantize_last: bool = False) -> None:
        if reg < 0:
            raise ValueError(f"reg must be >= 0, got {reg}")
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if not 0 <= prune_until <= 1:
            raise ValueError(f"prune_until must be in [0, 1], got {prune_until}")
        self.reg, self.sparsity, self.prune_until = float(reg), float(sparsity), float(prune_until)
        self.first, self.last = quantize_first, quantize_last
        self.layers: List[nn.Module] = []

    def scheduled_sparsity(self, progress: float) -> float:
        """Cubic ramp 0 -> ``sparsity`` over ``[0, prune_until]`` of training."""
        if self.prune_until <= 0 or progress >= self.prune_until:
            return self.sparsity
        return self.sparsity * (1.0 - (1.0 - progress / self.prune_until) ** 3)

    def on_train_begin(self, state: TrainState) -> None:
        self.layers = [m for _, m in hq_layers(state.model, self.first, self.last)]
        self._prune(state)

    @torch.no_grad()
    def _prune(self, state: TrainState) -> None:
        if self.sparsity <= 0:
            return
        s = self.scheduled_sparsity(state.progress)
        for m in self.layers:
            attach_mask(m, "weight", keep_mask(m.weight, s))

    def on_after_backward(self, state: TrainState) -> None:
        if self.reg <= 0:
            return
        total = 0.0
        for m in self.layers:
            w = m.weight
            t = ternary_target(w, self.sparsity)
            with torch.enable_grad():
                wl = w.detach().requires_grad_(True)
                d = cosine_distance(wl, t)
                (g,) = torch.autograd.grad(d, wl)
            total += float(d.detach())
            if w.grad is None:
                w.grad = self.reg * g
            else:
                w.grad.add_(g, alpha=self.reg)
        state.log["hq_cosine_distance"] = total / max(1, len(self.layers))

    def on_step_end(self, state: TrainState) -> None:
        self._prune(state)


@dataclass(frozen=True)
class HQParams:
    """Parameters of ``quant.hq``.

    Attributes:
        sparsity: fraction of zeros of every ternary layer (the pruning ratio).
        reg: weight of the cosine-distance regularizer in step 1.
        hs_epochs: epochs of step 1 (hyperspherical learning + pruning); 0 skips it
            (one-shot magnitude pruning, then reinitialization).
        hs_lr: learning rate of step 1 (None: the run's lr / 10, as fine-tuning).
        prune_until: fraction of step 1 by which pruning reaches ``sparsity``.
        threshold: TTQ's ``t`` for step 3 (``delta = t * max|w|``; paper of TTQ: 0.05).
        calib_samples: images for re-estimating batch-norm statistics after step 2.
        quantize_first, quantize_last: also ternarize the first conv / last linear.
    """

    sparsity: float = rng(0, 1, "[)", default=0.5)
    reg: float = rng(0, None, default=1.0)
    hs_epochs: int = rng(0, None, default=2)
    hs_lr: Optional[float] = rng(0, None, "(]", default=None)
    prune_until: float = rng(0, 1, "[]", default=0.5)
    threshold: float = rng(0, 1, "()", default=0.05)
    calib_samples: int = rng(0, None, default=512)
    quantize_first: bool = False
    quantize_last: bool = False


@METHODS.register("quant.hq", params=HQParams)
class HQQuant(TrainingMethod):
    """HQ: regularize + prune (``hs_epochs``), reinitialize, then TTQ layers trained with the
    STE by the variant's ``finetune_epochs``."""

    def _ternary_params(self, params: HQParams) -> TernaryParams:
        return TernaryParams(threshold=params.threshold, calib_samples=params.calib_samples,
                             quantize_first=params.quantize_first, quantize_last=params.quantize_last)

    def prepare(self, model: nn.Module, params: HQParams) -> nn.Module:
        model = copy.deepcopy(model)
        if params.sparsity > 0:
            for _, m in hq_layers(model, params.quantize_first, params.quantize_last):
                attach_mask(m, "weight", torch.ones_like(m.weight, dtype=torch.bool))
        return TernaryQuant().prepare(model, self._ternary_params(params))

    def apply(self, model: nn.Module, params: HQParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "quant.hq")
        model = copy.deepcopy(model)
        log: dict = {}
        layers = [m for _, m in hq_layers(model, params.quantize_first, params.quantize_last)]
        log["cosine_distance_start"] = _mean_distance(layers, params.sparsity)
        if params.hs_epochs > 0:
            cb = Component("hq_regularizer", HQRegularizerParams(
                reg=params.reg, sparsity=params.sparsity, prune_until=params.prune_until,
                quantize_first=params.quantize_first, quantize_last=params.quantize_last))
            lr = params.hs_lr if params.hs_lr is not None else ctx.train.lr * 0.1
            cfg = dataclasses.replace(ctx.train, epochs=params.hs_epochs, lr=lr, warmup_epochs=0.0,
                                      callbacks=tuple(ctx.train.callbacks) + (cb,))
            log["history"] = ctx.fit(model, cfg)
        log["cosine_distance_before_reinit"] = _mean_distance(layers, params.sparsity)
        with torch.no_grad():
            for m in layers:  # final exact pruning, then reinitialization onto the ternary point
                keep = keep_mask(m.weight, params.sparsity)
                scale = m.weight.abs()[keep].mean() if bool(keep.any()) else m.weight.new_zeros(())
                m.weight.copy_(scale * ternary_target(m.weight, params.sparsity))
                if params.sparsity > 0:
                    attach_mask(m, "weight", keep)
        model = TernaryQuant().apply(model, self._ternary_params(params), ctx)
        log["cosine_distance_after_reinit"] = ternary_cosine_distance(model) if layers else 0.0
        ctx.log["quant.hq"] = log
        return model
