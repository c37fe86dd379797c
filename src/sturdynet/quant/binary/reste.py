"""ReSTE order annealing (arXiv 2308.06689) as a training callback.

ReSTE's backward is the derivative of ``sign(x) |x|^(1/o)``; training starts at ``o = 1``
(the plain clipped identity, low estimating error but unstable) and moves to
``o = o_end`` (3 in the paper) on the quarter-cosine schedule of the authors' code,

    o(p) = o_start + (o_end - o_start) * (1 - cos(pi * p / 2)),

where ``p`` is the fraction of training done. The authors update ``o`` once per epoch
(``p = epoch / epochs``); here ``p = state.progress`` is updated before every batch,
which is the same curve sampled more finely.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...core.params import rng
from ...core.registry import CALLBACKS
from ...core.callbacks import Callback, TrainState
from .quantizers import sign_quantizers


def reste_order(progress: float, o_start: float = 1.0, o_end: float = 3.0) -> float:
    """ReSTE's ``o`` after a fraction ``progress`` in [0, 1] of training."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return o_start + (o_end - o_start) * (1.0 - math.cos(math.pi * progress / 2.0))


@dataclass(frozen=True)
class ReSTEAnnealParams:
    o_start: float = rng(1, None, default=1.0)
    o_end: float = rng(1, None, default=3.0)


@CALLBACKS.register("reste_anneal", params=ReSTEAnnealParams)
class ReSTEAnneal(Callback):
    """Sets ``o`` of every ReSTE quantizer of the model before each batch; logs it per epoch."""

    def __init__(self, o_start: float = 1.0, o_end: float = 3.0) -> None:
        if o_start < 1 or o_end < 1:
            raise ValueError(f"ReSTE orders must be >= 1, got o_start={o_start}, o_end={o_end}")
        self.o_start, self.o_end = float(o_start), float(o_end)
        self.o = self.o_start

    def _set(self, state: TrainState, o: float) -> None:
        self.o = o
        for q in sign_quantizers(state.model):
            if q.estimator == "reste":
                q.o = o

    def on_train_begin(self, state: TrainState) -> None:
        if not any(q.estimator == "reste" for q in sign_quantizers(state.model)):
            raise ValueError("reste_anneal: the model has no quantizer with estimator 'reste'")
        self._set(state, self.o_start)

    def on_batch_begin(self, state: TrainState) -> None:
        self._set(state, reste_order(min(1.0, state.progress), self.o_start, self.o_end))

    def on_epoch_end(self, state: TrainState) -> None:
        state.log["reste_o"] = self.o

    def on_train_end(self, state: TrainState) -> None:
        self._set(state, self.o_end)
