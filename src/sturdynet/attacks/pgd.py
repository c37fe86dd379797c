"""Projected gradient descent (Madry et al., arXiv 1706.06083), L-inf and L2.

Each restart begins at a uniformly random point of the L-inf ball, or (L2) at a
uniformly random direction scaled to a radius drawn uniformly from [0, eps], takes
``steps`` signed-gradient (L-inf) or normalized-gradient (L2) ascent steps of size
``alpha`` on the cross-entropy, and projects back onto the ball and [0, 1].

Unlike the last-iterate implementations of common libraries, each sample keeps its
best iterate over all steps and restarts: a misclassified one (targeted: one
classified as the target; among several, the one with the highest loss) when there
is one. A sample that no evaluated iterate fools gets the last iterate, which
has taken every step; with ``restarts > 1``, the last iterate of the restart that
ended with the highest loss. With a fixed ``alpha`` and seed the trajectory does not
depend on ``steps``, so more steps can never make the attack weaker: a sample fooled
by some iterate with fewer steps is fooled by the same iterate with more.

Cost: exactly ``steps`` forward+backward passes per restart, as a last-iterate PGD.
The iterates x_0 .. x_{steps-1} are judged by the forward pass their gradient needs
anyway; the last iterate is returned unjudged, since it is the fallback whether or
not it fools the model (the caller evaluates the result in any case). Only restarts
need it judged (which samples to restart, which restart to keep), and then one
forward pass on the samples not yet fooled is spent per restart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.params import rng
from ..core.registry import ATTACKS
from .base import Attack, AttackParams, to_ball, unit


@dataclass(frozen=True)
class PGDParams(AttackParams):
    """PGD: ``steps`` ascent steps per restart, step size ``alpha`` (default ``2.5 * eps /
    steps``, as in Madry et al.), ``restarts`` random restarts, ``random_start`` from a
    random point of the ball (else from x)."""

    steps: int = rng(1, None, default=10)
    alpha: Optional[float] = rng(0, None, "(]", default=None)
    restarts: int = rng(1, None, default=1)
    random_start: bool = True


@ATTACKS.register("pgd", params=PGDParams, aliases={"pgdl2": {"norm": "l2"}})
class PGD(Attack):
    """PGD with random start, restarts and best-iterate selection (fields: :class:`PGDParams`)."""

    name = "pgd"
    Params = PGDParams

    def __init__(self, model: nn.Module, **params: Any) -> None:
        super().__init__(model, **params)
        self.alpha = float(self.alpha) if self.alpha is not None else 2.5 * self.eps / self.steps

    def _start(self, x: Tensor) -> Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "linf":
            delta = (2 * self.rand_like(x) - 1) * self.eps
        else:
            r = self.rand(x.shape[0], device=x.device).view(-1, 1, 1, 1)
            delta = unit(self.randn_like(x)) * r * self.eps
        return (x + delta).clamp(0, 1)

    def _step(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return x_adv + self.alpha * grad.sign()
        return x_adv + self.alpha * unit(grad)

    def _run(self, x: Tensor, y: Tensor, target: Optional[Tensor], judge_last: bool):
        """One restart: returns (chosen iterate, its loss, its success) per sample.

        With ``judge_last`` False the loss and success of samples left on the last
        iterate are not computed (-inf and False).
        """
        loss_fn = self.ce(y, target)
        n = x.shape[0]
        best = x.clone()
        best_loss = torch.full((n,), -float("inf"), device=x.device)
        best_succ = torch.zeros(n, dtype=torch.bool, device=x.device)
        x_adv = self._start(x)
        for it in range(self.steps):
            loss, grad, logits = self.loss_and_grad(x_adv, loss_fn)
            succ = self.success(logits, y, target)
            self.progress(it, best_succ | succ, loss=loss)
            better = succ & (~best_succ | (loss > best_loss))
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
            best_loss = torch.where(better, loss, best_loss)
            best_succ = best_succ | succ
            x_adv = to_ball(x, self._step(x_adv, grad), self.eps, self.norm).detach()
        rest = ~best_succ
        best[rest] = x_adv[rest]
        if judge_last:
            todo = rest.nonzero().flatten()
            if todo.numel():
                t = None if target is None else target[todo]
                logits = self.logits(x_adv[todo])
                best_loss[todo] = self.ce(y[todo], t)(logits)
                best_succ[todo] = self.success(logits, y[todo], t)
        return best, best_loss, best_succ

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        judge = self.restarts > 1
        best, best_loss, best_succ = self._run(x, y, target, judge_last=judge)
        for _ in range(self.restarts - 1):
            todo = (~best_succ).nonzero().flatten()
            if todo.numel() == 0:
                break
            b, bl, bs = self._run(x[todo], y[todo], None if target is None else target[todo],
                                  judge_last=judge)
            better = bs | (bl > best_loss[todo])
            idx = todo[better]
            best[idx] = b[better]
            best_loss[idx] = bl[better]
            best_succ[idx] = bs[better]
        return best
