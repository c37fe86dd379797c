"""Auto-PGD (Croce & Hein, arXiv 2003.01690): APGD-CE, APGD-DLR and APGD-T.

Algorithm 1 of the paper, per sample:

- start ``x0`` at a random point on the boundary of the eps-ball (L-inf: uniform noise
  rescaled to L-inf norm eps; L2: a Gaussian direction of L2 norm eps), clipped to
  [0, 1]; step size ``eta = 2 * eps``;
- ``x1 = P(x0 + eta * sign(grad))`` (L2: the normalised gradient), then with momentum
  ``alpha = 0.75``: ``z = P(xk + eta * sign(grad f(xk)))``,
  ``x(k+1) = P(xk + alpha (z - xk) + (1 - alpha)(xk - x(k-1)))``;
- checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06)``. At each checkpoint the step
  size is halved and the iterate restarts from the best point so far when
  (1) the loss increased in fewer than ``rho * (w_j - w_(j-1))`` of the steps since
  the previous checkpoint (``rho = 0.75``), or (2) the step size was not reduced at the
  previous checkpoint and the best loss did not change since then.

Losses: cross-entropy, DLR (eq. 6) and targeted DLR (eq. 7). APGD-T (the AutoAttack
variant) runs the targeted DLR loss against each of the ``n_target_classes`` most
likely wrong classes in turn, on the points not yet fooled. Each sample returns its
first misclassified iterate (targeted: classified as the target), otherwise its
highest-loss point (with ``eot_iter > 1``, i.e. a random forward pass: always its
highest mean-loss point, which lies deeper than the first iterate whose mean logits are
wrong). Restarts run only on the points not yet fooled, and a sample that
is already misclassified (targeted: already the target; judged on the mean logits of
``eot_iter`` passes) is returned as it is without being attacked, as the reference
code does (one forward pass per batch).

Deviations from the reference code: condition 2 is applied at the first checkpoint as
the paper states (the reference code skips it there), and checkpoints are computed
from the formula above rather than by integer decrements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.params import rng
from ..core.registry import ATTACKS
from .base import Attack, AttackParams, dlr_loss, dlr_targeted_loss, to_ball, unit

LOSSES = ("ce", "dlr")


def checkpoints(n_iter: int) -> List[int]:
    """The iterations ``w_0 = 0 < w_1 < ...`` at which the step size may be halved."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({int(math.ceil(round(pj * n_iter, 9))) for pj in p})


@dataclass(frozen=True)
class APGDParams(AttackParams):
    """APGD: ``steps`` iterations ``N_iter`` (the paper uses 100), ``loss`` ``"ce"`` or
    ``"dlr"``, ``restarts`` (each on the points not yet fooled), ``rho`` (the condition-1
    threshold), ``momentum`` (the momentum ``alpha``)."""

    steps: int = rng(1, None, default=100)
    loss: Literal["ce", "dlr"] = "ce"
    restarts: int = rng(1, None, default=1)
    rho: float = rng(0, 1, "()", default=0.75)
    momentum: float = rng(0, 1, "(]", default=0.75)


@ATTACKS.register("apgd", params=APGDParams, aliases={"apgd-ce": {"loss": "ce"}, "apgd-dlr": {"loss": "dlr"}})
class APGD(Attack):
    """Auto-PGD with the CE or DLR loss (targeted mode: -CE or targeted DLR); fields:
    :class:`APGDParams`."""

    name = "apgd"
    Params = APGDParams

    def __init__(self, model: nn.Module, **params: Any) -> None:
        super().__init__(model, **params)
        self.checkpoints = checkpoints(self.steps)

    @classmethod
    def check_label(cls, params: Any) -> str:
        return f"apgd-{params.loss}"

    # -- pieces -----------------------------------------------------------------------
    def loss_fn(self, y: Tensor, target: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
        if target is None:
            return (lambda z: F.cross_entropy(z, y, reduction="none")) if self.loss == "ce" \
                else (lambda z: dlr_loss(z, y))
        return (lambda z: -F.cross_entropy(z, target, reduction="none")) if self.loss == "ce" \
            else (lambda z: dlr_targeted_loss(z, y, target))

    def _start(self, x: Tensor) -> Tensor:
        return (x + self.eps * self.sphere_like(x)).clamp(0, 1)

    def _dir(self, g: Tensor) -> Tensor:
        return g.sign() if self.norm == "linf" else unit(g)

    def run_once(self, x: Tensor, y: Tensor, target: Optional[Tensor],
                 goal: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """One APGD run. ``target`` feeds the loss; success is reaching ``goal`` (a
        target label) when given, else misclassification. Returns (x_adv, success)."""
        fn = self.loss_fn(y, target)
        view = (-1,) + (1,) * (x.dim() - 1)

        def succeeded(logits: Tensor) -> Tensor:
            pred = logits.argmax(1)
            return pred == goal if goal is not None else pred != y

        x_cur = self._start(x)
        f, g, logits = self.loss_and_grad(x_cur, fn)
        succ = succeeded(logits)
        adv = x_cur.clone()
        x_max, f_max, g_max = x_cur.clone(), f.clone(), g.clone()
        hist = [f]
        eta = torch.full((x.shape[0],), 2 * self.eps, device=x.device)
        reduced_last = torch.zeros_like(succ)
        f_max_last = f_max.clone()
        w_prev = 0
        x_prev = x_cur
        for k in range(self.steps):
            z = to_ball(x, x_cur + eta.view(view) * self._dir(g), self.eps, self.norm)
            if k > 0:
                a = self.momentum
                z = to_ball(x, x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), self.eps, self.norm)
            x_prev, x_cur = x_cur, z.detach()
            f, g, logits = self.loss_and_grad(x_cur, fn)
            hist.append(f)
            s = succeeded(logits)
            self.progress(k, succ | s, loss=f)
            new = s & ~succ
            adv[new] = x_cur[new]
            succ |= s
            up = f > f_max
            x_max[up], f_max[up], g_max[up] = x_cur[up], f[up], g[up]
            if k + 1 in self.checkpoints[1:]:
                w = k + 1
                incr = torch.stack([hist[i + 1] > hist[i] for i in range(w_prev, w)]).sum(0)
                cond1 = incr < self.rho * (w - w_prev)
                cond2 = ~reduced_last & (f_max <= f_max_last)
                red = cond1 | cond2
                eta = torch.where(red, eta / 2, eta)
                x_cur = torch.where(red.view(view), x_max, x_cur)
                g = torch.where(red.view(view), g_max, g)
                reduced_last, f_max_last, w_prev = red, f_max.clone(), w
        # With EOT (a random forward pass) the first iterate whose mean logits are wrong sits on
        # the boundary, where about half of the draws are still correct: return the highest
        # mean-loss iterate instead, which scores lower under the mean over draws.
        out = x_max if self.eot_iter > 1 else torch.where(succ.view(view), adv, x_max)
        return out, succ

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        out = x.clone()
        done = self.success(self.logits(x), y, target)  # already fooled: nothing to do
        for r in range(self.restarts):
            todo = (~done).nonzero().flatten()
            if todo.numel() == 0:
                break
            t = None if target is None else target[todo]
            adv, s = self.run_once(x[todo], y[todo], t, goal=t)
            if r == 0:
                out[todo] = adv
            out[todo[s]] = adv[s]
            done[todo[s]] = True
        return out


@dataclass(frozen=True)
class APGDTParams(APGDParams):
    """APGD-T: ``n_target_classes`` target classes to try (AutoAttack uses 9); ``loss``
    ``"dlr"`` (targeted DLR, the default) or ``"ce"`` (minus CE on the target)."""

    loss: Literal["ce", "dlr"] = "dlr"
    n_target_classes: int = rng(1, None, default=9)


@ATTACKS.register("apgd-t", params=APGDTParams, aliases={"apgdt": {}})
class APGDT(APGD):
    """APGD-T: targeted DLR against the ``n_target_classes`` most likely wrong classes,
    one after the other on the points not yet misclassified (an untargeted attack
    overall: success means any wrong class). Its recipe check is ``apgd`` with
    ``loss: dlr-t``."""

    name = "apgd-t"
    Params = APGDTParams
    supports_targeted = False
    check_into = ("apgd", "loss", "dlr-t")

    @classmethod
    def check_label(cls, params: Any) -> str:
        return cls.name

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        logits = self.logits(x)
        n_cls = logits.shape[1]
        ranked = logits.scatter(1, y[:, None], -float("inf")).argsort(1, descending=True)
        out = x.clone()
        done = logits.argmax(1) != y
        for t in range(min(self.n_target_classes, n_cls - 1)):
            for _ in range(self.restarts):
                todo = (~done).nonzero().flatten()
                if todo.numel() == 0:
                    return out
                tgt = ranked[todo, t]
                adv, s = self.run_once(x[todo], y[todo], tgt)
                if t == 0:
                    out[todo] = adv
                out[todo[s]] = adv[s]
                done[todo[s]] = True
        return out
