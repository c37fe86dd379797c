"""Projected gradient descent (Madry et al., arXiv 1706.06083), L-inf and L2.

Each restart begins at a uniformly random point of the eps-ball (L-inf) or a random
direction scaled to a random radius (L2), takes ``steps`` signed-gradient (L-inf) or
normalized-gradient (L2) ascent steps of size ``alpha`` on the cross-entropy, and
projects back onto the ball and [0, 1]. Unlike the last-iterate implementations of
common libraries, each sample keeps its best iterate over all steps and restarts: the
first misclassified one, otherwise the one with the highest loss. More steps can
therefore never make the attack weaker.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..registry import ATTACKS
from .base import Attack, project


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD with random start, restarts and best-iterate selection.

    Args:
        steps: ascent steps per restart.
        alpha: step size (default ``2.5 * eps / steps``, as in Madry et al.).
        restarts: number of random restarts (>= 1).
        random_start: start from a random point of the ball (else from x).
    """

    name = "pgd"

    def __init__(self, model: nn.Module, *, eps: float = 8 / 255, steps: int = 10, alpha: Optional[float] = None,
                 restarts: int = 1, random_start: bool = True, **kw) -> None:
        super().__init__(model, eps=eps, **kw)
        if steps < 1 or restarts < 1:
            raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        self.steps = steps
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / steps
        self.restarts = restarts
        self.random_start = random_start

    def _start(self, x: Tensor) -> Tensor:
        if not self.random_start or self.eps == 0:
            return x.clone()
        if self.norm == "linf":
            delta = (2 * self.rand_like(x) - 1) * self.eps
        else:
            d = self.randn_like(x)
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            r = torch.rand(x.shape[0], generator=self.generator).to(x.device).view(-1, 1, 1, 1)
            delta = d * r * self.eps
        return (x + delta).clamp(0, 1)

    def _step(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return x_adv + self.alpha * grad.sign()
        g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return x_adv + self.alpha * g

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        loss_fn = self.ce(y, target)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
        best_succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

        def keep(cand: Tensor, loss: Tensor, logits: Tensor) -> None:
            nonlocal best, best_loss, best_succ
            succ = self.success(logits, y, target)
            better = (succ & ~best_succ) | ((succ == best_succ) & (loss > best_loss))
            best = torch.where(better.view(-1, 1, 1, 1), cand, best)
            best_loss = torch.where(better, loss, best_loss)
            best_succ = best_succ | succ

        for _ in range(self.restarts):
            x_adv = self._start(x)
            for _ in range(self.steps):
                loss, grad, logits = self.loss_and_grad(x_adv, loss_fn)
                keep(x_adv, loss, logits)
                x_adv = self._step(x_adv, grad)
                x_adv = (x + project(x_adv - x, self.eps, self.norm)).clamp(0, 1).detach()
            with torch.no_grad():
                logits = self.model(x_adv)
                keep(x_adv, loss_fn(logits), logits)
        return best
