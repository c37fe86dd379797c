"""AGENT: adaptive gradient correction for sparse training.

Lei et al., "Balance is Essence: Accelerating Sparse Training via Adaptive Gradient
Correction" (arXiv 2301.03573). A variance-reduction (SVRG-style) correction whose
weight is estimated from data. At the start of every epoch:

* the snapshot w~ is set to the current weights and mu, the mean gradient at w~ over
  the training set, is computed (one extra pass, no optimizer step);
* on the same pass, the per-batch losses at the current weights and at the previous
  snapshot give ``tau_new = Cov(l_cur, l_prev) / Var(l_prev)`` (sample statistics), and
  ``tau <- (1 - ema) * tau + ema * tau_new`` (tau starts at ``tau``, 0.1).

At every step the gradient g of the batch is replaced by
``g + gamma * tau * (mu - g~)``, where g~ is the snapshot's gradient on the same batch
(gamma = 0.1 and ema = 0.3 as in the authors' A-RigL code).

Deviations: the first epoch has no previous snapshot, so tau keeps its initial value
there (the authors' code correlates with a separately initialised network); the mean
gradient pass uses the un-augmented training images in order. The correction applies
to every trainable parameter; place this callback after ``rigl`` / ``set`` so their
growth criterion reads the uncorrected gradient. Costs about two extra forward-backward
passes per step-equivalent (snapshot gradient per step, mean-gradient pass per epoch).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.params import rng
from ...data.base import batches
from ...core.registry import CALLBACKS
from ...core.callbacks import Callback, TrainState


def control_variate_tau(cur: Tensor, prev: Tensor) -> Optional[float]:
    """``Cov(cur, prev) / Var(prev)`` with the unbiased (n - 1) estimators; None when
    fewer than two samples or ``prev`` has no variance."""
    cur, prev = cur.double().flatten(), prev.double().flatten()
    if cur.numel() != prev.numel():
        raise ValueError(f"loss vectors differ in length ({cur.numel()} vs {prev.numel()})")
    n = cur.numel()
    if n < 2:
        return None
    var = float(((prev - prev.mean()) ** 2).sum()) / (n - 1)
    if var <= 0.0:
        return None
    cov = float(((cur - cur.mean()) * (prev - prev.mean())).sum()) / (n - 1)
    return cov / var


@dataclass(frozen=True)
class AGENTParams:
    gamma: float = rng(0, None, default=0.1)
    tau: float = rng(None, None, default=0.1)
    ema: float = rng(0, 1, "(]", default=0.3)
    batch_size: Optional[int] = rng(1, None, default=None)


@CALLBACKS.register("agent", params=AGENTParams)
class AGENT(Callback):
    """Adaptive gradient correction (arXiv 2301.03573); ``taus`` lists tau per epoch."""

    def __init__(self, gamma: float = 0.1, tau: float = 0.1, ema: float = 0.3,
                 batch_size: Optional[int] = None) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not 0.0 < ema <= 1.0:
            raise ValueError(f"ema must be in (0, 1], got {ema}")
        self.gamma, self.tau, self.ema, self.batch_size = gamma, float(tau), ema, batch_size
        self.snapshot: Optional[nn.Module] = None
        self.mu: List[Optional[Tensor]] = []
        self.taus: List[float] = []

    def _loss(self, logits: Tensor, y: Tensor, state: TrainState) -> Tensor:
        return F.cross_entropy(logits, y, label_smoothing=getattr(state.config, "label_smoothing", 0.0))

    def on_epoch_begin(self, state: TrainState) -> None:
        snap = copy.deepcopy(state.model)
        snap.train()
        for p in snap.parameters():
            p.grad = None
        bs = self.batch_size or state.config.batch_size
        cur, prev, n = [], [], 0
        for x, y in batches(state.data.train, bs):
            x, y = x.to(state.device), y.to(state.device)
            loss = self._loss(snap(x), y, state)
            loss.backward()
            cur.append(float(loss.detach()))
            if self.snapshot is not None:
                with torch.no_grad():
                    prev.append(float(self._loss(self.snapshot(x), y, state)))
            n += 1
        self.mu = [None if p.grad is None else p.grad.detach() / n for p in snap.parameters()]
        if self.snapshot is not None:
            t = control_variate_tau(torch.tensor(cur), torch.tensor(prev))
            if t is not None:
                self.tau = (1.0 - self.ema) * self.tau + self.ema * t
        for p in snap.parameters():
            p.grad = None
        self.snapshot = snap
        self.taus.append(self.tau)
        state.log["agent_tau"] = self.tau

    def on_after_backward(self, state: TrainState) -> None:
        if self.snapshot is None or self.gamma == 0.0:
            return
        snap = self.snapshot
        for p in snap.parameters():
            p.grad = None
        self._loss(snap(state.x), state.y, state).backward()
        c = self.gamma * self.tau
        with torch.no_grad():
            for p, ps, mu in zip(state.model.parameters(), snap.parameters(), self.mu):
                if p.grad is None or ps.grad is None or mu is None:
                    continue
                p.grad.add_(mu - ps.grad, alpha=c)

    def on_train_end(self, state: TrainState) -> None:
        self.snapshot, self.mu = None, []
