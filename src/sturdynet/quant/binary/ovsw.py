"""OvSW: Overcoming Silent Weights for binary networks (arXiv 2407.05257), a training callback.

Runs in ``on_after_backward`` (gradients final, before the optimizer step), on the
latent weights of every binary layer, in the order of the authors' code:

1. Adaptive Gradient Scaling (AGS): for each output channel c, when
   ``||g_c|| / ||w_c|| < delta`` the gradient is rescaled to ``g_c * delta ||w_c|| / ||g_c||``
   (so the ratio becomes ``delta``). As in the authors' code, ``||w_c||`` is floored at
   ``1e-3``; a channel whose gradient is exactly zero is left alone (there is no
   direction to scale).
2. Silence Awareness Decaying (SAD): the sign-flip tracker
   ``s <- m s + (1 - m) 1[sign(w_t) != sign(w_{t-1})]`` is updated (``w_{t-1}``: the
   weight at the previous call), and weights with ``s < tau`` get ``lambda_s * w``
   *added to their gradient* (the paper's code does exactly this, so the extra decay
   goes through the optimizer, momentum included, like ordinary weight decay).

Defaults follow the authors' CIFAR-10 scripts (github.com/JingyangXiang/OvSW,
``resnet18_resnet20_vggsmall.py``): ``delta = 0.04``, ``lambda_s = 9e-4``, ``m = 0.999``,
``tau = 1e-4`` (their ImageNet runs use ``delta = 0.01``, ``lambda_s = 2e-5``). With
``ags: false`` and ``sad: false`` the callback is the pure diagnostic of
:class:`~.sign_flips.SignFlips`, whose per-epoch numbers it also logs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import Tensor

from ...core.params import rng
from ...core.registry import CALLBACKS
from ...core.callbacks import TrainState
from .sign_flips import SignFlips, SignTracker


@torch.no_grad()
def adaptive_gradient_scale(weights: Sequence[Tensor], delta: float, weight_floor: float = 1e-3) -> List[float]:
    """AGS in place on ``w.grad`` for each weight; returns each layer's mean ratio before scaling."""
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    ratios = []
    for w in weights:
        if w.grad is None:
            continue
        g = w.grad
        gn = g.flatten(1).norm(dim=1) if g.dim() > 1 else g.abs()
        wn = (w.flatten(1).norm(dim=1) if w.dim() > 1 else w.abs()).clamp(min=weight_floor)
        ratio = gn / wn
        ratios.append(float(ratio.mean()))
        scale = torch.where((ratio < delta) & (gn > 0), delta * wn / gn.clamp(min=torch.finfo(gn.dtype).tiny),
                            torch.ones_like(gn))
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return ratios


@torch.no_grad()
def silence_awareness_decay(weights: Sequence[Tensor], tracker: SignTracker, lambda_s: float) -> float:
    """SAD: update ``tracker`` with the current signs, add ``lambda_s * w`` to silent weights' grads.

    Returns the fraction of weights that were silent (and decayed).
    """
    tracker.update(weights)
    silent = tracker.silent()
    for w, s in zip(weights, silent):
        if w.grad is None:
            w.grad = torch.zeros_like(w)
        w.grad.add_(lambda_s * s.to(w.dtype) * w)
    n = sum(s.numel() for s in silent)
    return float(sum(int(s.sum()) for s in silent)) / max(1, n)


@dataclass(frozen=True)
class OvSWParams:
    ags: bool = True
    sad: bool = True
    delta: float = rng(0, None, default=0.04)
    lambda_s: float = rng(0, None, default=9e-4)
    momentum: float = rng(0, 1, "[)", default=0.999)
    threshold: float = rng(0, None, default=1e-4)


@CALLBACKS.register("ovsw", params=OvSWParams)
class OvSW(SignFlips):
    """AGS + SAD on binary latent weights; logs sign-flip and silent fractions per epoch."""

    def __init__(self, ags: bool = True, sad: bool = True, delta: float = 0.04, lambda_s: float = 9e-4,
                 momentum: float = 0.999, threshold: float = 1e-4) -> None:
        super().__init__(momentum, threshold)
        if delta < 0 or lambda_s < 0:
            raise ValueError(f"delta and lambda_s must be >= 0, got {delta}, {lambda_s}")
        self.ags, self.sad, self.delta, self.lambda_s = ags, sad, float(delta), float(lambda_s)
        self._ratios: List[float] = []

    def on_epoch_begin(self, state: TrainState) -> None:
        super().on_epoch_begin(state)
        self._ratios = []

    def on_after_backward(self, state: TrainState) -> None:
        assert self.tracker is not None
        ws = self._weights(state)
        if self.ags:
            r = adaptive_gradient_scale(ws, self.delta)
            if r:
                self._ratios.append(sum(r) / len(r))
        if self.sad:
            silence_awareness_decay(ws, self.tracker, self.lambda_s)

    def on_step_end(self, state: TrainState) -> None:
        if not self.sad:  # no SAD: the tracker is the diagnostic's, updated after each step
            assert self.tracker is not None
            self.tracker.update(self._weights(state))
        self._count_flips(state)

    def on_epoch_end(self, state: TrainState) -> None:
        super().on_epoch_end(state)
        if self._ratios:
            state.log["ovsw_grad_weight_ratio"] = sum(self._ratios) / len(self._ratios)
