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
likely wrong classes in turn, on the points not yet fooled; when few points are left,
several targets run together as (sample, target) rows of one batch of at most
``batch_size`` rows (:meth:`Attack.target_chunks`), and a sample's other rows stop as
soon as one of them fools it. Each sample returns its
first misclassified iterate (targeted: classified as the target), otherwise its
highest-loss point (with ``eot_iter > 1``, i.e. a random forward pass: always its
highest mean-loss point, which lies deeper than the first iterate whose mean logits are
wrong). Restarts run only on the points not yet fooled, and a sample that
is already misclassified (targeted: already the target; judged on the mean logits of
``eot_iter`` passes) is returned as it is without being attacked, as the reference
code does (one forward pass per batch).

Without EOT a sample leaves the batch at its first misclassified iterate (that iterate
is its answer either way, and every sample's step sizes and checkpoints are its own),
so later iterations cost only the samples still standing.

Deviations from the reference code: condition 2 is applied at the first checkpoint as
the paper states (the reference code skips it there); checkpoints are computed from the
formula above rather than by integer decrements; fooled samples leave the batch and
APGD-T's targets may share a batch (both change the cost, not any sample's trajectory
or verdict).
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
                 goal: Optional[Tensor] = None, group: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """One APGD run. ``target`` feeds the loss; success is reaching ``goal`` (a
        target label) when given, else misclassification. Returns (x_adv, success).

        Without EOT a row stops as soon as it succeeds (its first successful iterate is
        final; every other row's trajectory is its own, so dropping it changes nothing
        else). ``group`` (one id per row, e.g. the sample of a (sample, target) pair)
        also stops every other row of a group one of whose rows succeeded; those rows
        return their best point so far with success False."""
        n = x.shape[0]
        view = (-1,) + (1,) * (x.dim() - 1)
        fn = self.loss_fn(y, target)
        early = self.eot_iter == 1
        out, succ_all = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        ids = torch.arange(n, device=x.device)  # original row of each live row

        def succeeded(logits: Tensor) -> Tensor:
            pred = logits.argmax(1)
            return pred == goal if goal is not None else pred != y

        x_cur = self._start(x)
        f, g, logits = self.loss_and_grad(x_cur, fn)
        succ = succeeded(logits)
        adv = x_cur.clone()
        x_max, f_max, g_max = x_cur.clone(), f.clone(), g.clone()
        eta = torch.full((n,), 2 * self.eps, device=x.device)
        reduced_last = torch.zeros_like(succ)
        f_max_last, f_last, incr = f_max.clone(), f, torch.zeros_like(f)
        w_prev, x_prev = 0, x_cur
        for k in range(self.steps + 1):
            if early and bool(succ.any()):  # retire the rows that are done (and their groups)
                done = succ if group is None else _group_any(succ, group)
                out[ids[succ]], succ_all[ids[succ]] = adv[succ], True
                out[ids[done & ~succ]] = x_max[done & ~succ]
                keep = ~done
                if not bool(keep.any()):
                    return out, succ_all
                ids, x, y, x_cur, x_prev, g, x_max, f_max, g_max, eta, reduced_last, f_max_last, f_last, incr, \
                    succ, adv = (t[keep] for t in (ids, x, y, x_cur, x_prev, g, x_max, f_max, g_max, eta,
                                                    reduced_last, f_max_last, f_last, incr, succ, adv))
                target = None if target is None else target[keep]
                goal = None if goal is None else goal[keep]
                group = None if group is None else group[keep]
                fn = self.loss_fn(y, target)
            if k == self.steps:
                break
            z = to_ball(x, x_cur + eta.view(view) * self._dir(g), self.eps, self.norm)
            if k > 0:
                a = self.momentum
                z = to_ball(x, x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), self.eps, self.norm)
            x_prev, x_cur = x_cur, z.detach()
            f, g, logits = self.loss_and_grad(x_cur, fn)
            incr += f > f_last
            f_last = f
            s = succeeded(logits)
            if self.callback is not None:
                live = succ_all.clone()
                live[ids] |= succ | s
                self.progress(k, live, loss=f)
            new = s & ~succ
            adv = torch.where(new.view(view), x_cur, adv)
            succ = succ | s
            up = f > f_max
            x_max, g_max = torch.where(up.view(view), x_cur, x_max), torch.where(up.view(view), g, g_max)
            f_max = torch.where(up, f, f_max)
            if k + 1 in self.checkpoints[1:]:
                w = k + 1
                cond1 = incr < self.rho * (w - w_prev)
                cond2 = ~reduced_last & (f_max <= f_max_last)
                red = cond1 | cond2
                eta = torch.where(red, eta / 2, eta)
                x_cur = torch.where(red.view(view), x_max, x_cur)
                g = torch.where(red.view(view), g_max, g)
                reduced_last, f_max_last, w_prev, incr = red, f_max.clone(), w, torch.zeros_like(incr)
        # With EOT (a random forward pass) the first iterate whose mean logits are wrong sits on
        # the boundary, where about half of the draws are still correct: return the highest
        # mean-loss iterate instead, which scores lower under the mean over draws.
        out[ids] = x_max if self.eot_iter > 1 else torch.where(succ.view(view), adv, x_max)
        succ_all[ids] = succ
        return out, succ_all

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


def _group_any(flag: Tensor, group: Tensor) -> Tensor:
    """Per row: does any row of its group have ``flag``."""
    hit = torch.zeros(int(group.max()) + 1, dtype=torch.bool, device=group.device)
    hit[group[flag]] = True
    return hit[group]


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
        n_targets = min(self.n_target_classes, logits.shape[1] - 1)
        ranked = logits.scatter(1, y[:, None], -float("inf")).argsort(1, descending=True)[:, :n_targets]
        out = x.clone()
        done = logits.argmax(1) != y
        first = torch.ones_like(done)  # the sample's output is still the clean input
        for chunk in self.target_chunks(done, n_targets):
            for _ in range(self.restarts):
                todo = (~done).nonzero().flatten()
                if todo.numel() == 0:
                    return out
                rows, tgt = self.target_rows(todo, ranked, chunk)
                adv, s = self.run_once(x[rows], y[rows], tgt, group=rows)
                # per sample: the earliest target that fooled it, else its first row
                pick = torch.where(s, torch.arange(rows.numel(), device=x.device), rows.numel())
                best = torch.full((x.shape[0],), rows.numel(), dtype=torch.long, device=x.device)
                best.scatter_reduce_(0, rows, pick, "amin")
                hit = best < rows.numel()
                out[hit] = adv[best[hit]]
                fresh = first[todo] & ~hit[todo]
                out[todo[fresh]] = adv[:todo.numel()][fresh]
                first[todo] = False
                done |= hit
        return out
