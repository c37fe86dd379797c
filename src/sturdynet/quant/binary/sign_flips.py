"""Sign-flip tracking of binary latent weights: the "silent weights" diagnostic.

OvSW (arXiv 2407.05257) tracks, for every latent weight, an exponential moving average
of its sign flips, ``s <- m * s + (1 - m) * 1[sign(w_t) != sign(w_{t-1})]`` (``m = 0.999``,
``s_0 = 0``), and calls a weight *silent* when ``s < tau`` (``tau = 1e-4``; values from
the authors' code, github.com/JingyangXiang/OvSW). :class:`SignTracker` implements that
tracker; :class:`SignFlips` (callback ``sign_flips``) runs it after every optimizer
step of any training of a binary model and logs per epoch:

- ``binary_flip_fraction``: fraction of binary weights whose sign flipped at least once
  during the epoch;
- ``binary_silent_fraction``: fraction whose tracker is below ``tau`` at the epoch's end;
- ``binary_never_flipped_fraction``: fraction that has not flipped since training began.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ...core.params import rng
from ...core.registry import CALLBACKS
from ...core.callbacks import Callback, TrainState
from .quantizers import binary_weights


class SignTracker:
    """EMA of sign flips per weight, over a list of weight tensors.

    Args:
        weights: the latent weights to track (their current signs are the reference).
        momentum: EMA momentum ``m``.
        threshold: ``tau``; a weight is silent when its tracker is below it.
    """

    def __init__(self, weights: Sequence[Tensor], momentum: float = 0.999, threshold: float = 1e-4) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.momentum, self.threshold = float(momentum), float(threshold)
        self.prev: List[Tensor] = [torch.sign(w.detach()) for w in weights]
        self.tracker: List[Tensor] = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
        self.ever: List[Tensor] = [torch.zeros_like(w, dtype=torch.bool) for w in weights]

    @torch.no_grad()
    def update(self, weights: Sequence[Tensor]) -> List[Tensor]:
        """Compare signs with the previous call, update the trackers; returns the flip masks."""
        if len(weights) != len(self.prev):
            raise ValueError(f"tracking {len(self.prev)} tensors, got {len(weights)}")
        flips = []
        for i, w in enumerate(weights):
            s = torch.sign(w.detach())
            f = s != self.prev[i]
            self.tracker[i].mul_(self.momentum).add_(f.float(), alpha=1.0 - self.momentum)
            self.ever[i] |= f
            self.prev[i] = s
            flips.append(f)
        return flips

    def silent(self) -> List[Tensor]:
        """Boolean masks of the silent weights (tracker < tau)."""
        return [t < self.threshold for t in self.tracker]

    def silent_fraction(self) -> float:
        n = sum(t.numel() for t in self.tracker)
        return float(sum(int(s.sum()) for s in self.silent())) / max(1, n)

    def never_flipped_fraction(self) -> float:
        n = sum(e.numel() for e in self.ever)
        return float(sum(int((~e).sum()) for e in self.ever)) / max(1, n)


@dataclass(frozen=True)
class SignFlipsParams:
    momentum: float = rng(0, 1, "[)", default=0.999)
    threshold: float = rng(0, None, default=1e-4)


@CALLBACKS.register("sign_flips", params=SignFlipsParams)
class SignFlips(Callback):
    """Per-epoch sign-flip and silent-weight fractions of the binary weights (diagnostic only)."""

    def __init__(self, momentum: float = 0.999, threshold: float = 1e-4) -> None:
        self.momentum, self.threshold = momentum, threshold
        self.tracker: Optional[SignTracker] = None
        self._epoch_flips: List[Tensor] = []
        self._diag_prev: List[Tensor] = []

    def _weights(self, state: TrainState) -> List[Tensor]:
        return binary_weights(state.model)

    def on_train_begin(self, state: TrainState) -> None:
        ws = self._weights(state)
        if not ws:
            raise ValueError(f"{type(self).__name__}: the model has no binary weights to track")
        self.tracker = SignTracker(ws, self.momentum, self.threshold)
        self._diag_prev = [torch.sign(w.detach()) for w in ws]

    def on_epoch_begin(self, state: TrainState) -> None:
        self._epoch_flips = [torch.zeros_like(p, dtype=torch.bool) for p in self._diag_prev]

    @torch.no_grad()
    def _count_flips(self, state: TrainState) -> None:
        for i, w in enumerate(self._weights(state)):
            s = torch.sign(w)
            self._epoch_flips[i] |= s != self._diag_prev[i]
            self._diag_prev[i] = s

    def on_step_end(self, state: TrainState) -> None:
        assert self.tracker is not None
        self.tracker.update(self._weights(state))
        self._count_flips(state)

    def on_epoch_end(self, state: TrainState) -> None:
        assert self.tracker is not None
        n = sum(f.numel() for f in self._epoch_flips)
        state.log["binary_flip_fraction"] = float(sum(int(f.sum()) for f in self._epoch_flips)) / max(1, n)
        state.log["binary_silent_fraction"] = self.tracker.silent_fraction()
        state.log["binary_never_flipped_fraction"] = self.tracker.never_flipped_fraction()
