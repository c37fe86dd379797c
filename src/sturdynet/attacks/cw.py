"""Carlini & Wagner L2 attack (arXiv 1608.04644).

A minimum-norm attack. The image is re-parametrised as ``x' = (tanh(w) + 1) / 2`` (so
it always lies in [0, 1]) and Adam minimises ``||x' - x||_2^2 + c * f(x')`` with
``f = max(z_y - max_{i != y} z_i, -kappa)`` (targeted: ``max(max_{i != t} z_i - z_t,
-kappa)``), starting from ``w = atanh(2x - 1)``. A per-sample binary search over ``c``
(``binary_steps`` rounds from ``c_init``; multiply by 10 while no upper bound is
known) finds the smallest distortion; each round stops early when the batch loss has
not improved by 0.01% over a tenth of the iterations, as in the authors' code.

``eps`` turns it into a bounded attack for robust accuracy: the smallest adversarial
found is returned when its L2 norm is at most ``eps``; otherwise it is projected onto
the eps-ball (where it is usually no longer adversarial). After a call,
``min_norms`` holds each sample's smallest adversarial L2 norm (inf when none was
found), from which accuracy at any radius can be read off without re-running.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import torch
from torch import Tensor

from ..core.params import rng
from ..core.registry import ATTACKS
from .base import Attack, AttackParams, margin, to_ball


@dataclass(frozen=True)
class CWParams(AttackParams):
    """C&W-L2: ``eps`` L2 radius of the returned examples (``inf``: unbounded), ``steps``
    Adam iterations per binary-search round, ``binary_steps`` rounds of the search over
    ``c`` from ``c_init``, ``kappa`` confidence margin, ``lr`` Adam learning rate,
    ``abort_early`` (stop a round when the loss stalls)."""

    eps: float = rng(0, None, inf=True, default=float("inf"))
    norm: Literal["l2"] = "l2"
    steps: int = rng(1, None, default=100)
    binary_steps: int = rng(1, None, default=9)
    c_init: float = rng(0, None, "(]", default=1e-3)
    kappa: float = rng(0, None, default=0.0)
    lr: float = rng(0, None, "(]", default=0.01)
    abort_early: bool = True


@ATTACKS.register("cw", params=CWParams)
class CW(Attack):
    """C&W-L2 with binary search over ``c`` (fields: :class:`CWParams`)."""

    name = "cw"
    Params = CWParams
    norms = ("l2",)
    check = "min_norm"
    check_defaults = {"eps": 0.5, "samples": 500}
    display = "C&W"
    budget_hint = "raise steps, binary_steps or c_init"
    param_aliases = {**Attack.param_aliases, "c": "c_init"}

    def _margin(self, logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        """``f`` before clamping: negative when the goal is reached."""
        return -margin(logits, target) if self.targeted else margin(logits, y)

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        n = x.shape[0]
        dev = x.device
        w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
        lower = torch.zeros(n, device=dev)
        upper = torch.full((n,), 1e10, device=dev)
        c = torch.full((n,), self.c_init, device=dev)
        best_l2 = torch.full((n,), float("inf"), device=dev)
        best_adv = x.clone()
        check_every = max(self.steps // 10, 1)

        def closure(w_: Tensor) -> Tuple[Tensor, Tensor]:
            """Per-sample CW loss at the current constants ``c`` (read when called), and the logits."""
            adv_ = (torch.tanh(w_) + 1) / 2
            z = self.call_model(adv_)
            dist = (adv_ - x).pow(2).flatten(1).sum(1)
            return dist + c * self._margin(z, y, target).clamp_min(-self.kappa), z

        for _ in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=dev)
            prev = float("inf")
            for it in range(self.steps):
                loss, grad, logits = self.eot_grad(w, closure)  # the mean over eot_iter passes
                with torch.no_grad():
                    adv = (torch.tanh(w) + 1) / 2
                    l2sq = (adv - x).pow(2).flatten(1).sum(1)
                    m = self._margin(logits, y, target)
                    succ = m < -self.kappa if self.kappa > 0 else self._reached(logits, y, target)
                    l2 = l2sq.sqrt()
                    better = succ & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best_adv = torch.where(better.view(-1, 1, 1, 1), adv, best_adv)
                    found |= succ
                self.progress(it, found, loss=loss)
                w.grad = grad
                opt.step()
                if self.abort_early and it % check_every == 0:
                    total = float(loss.sum())
                    if total > prev * 0.9999:
                        break
                    prev = total
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(found | (upper < 1e9), (lower + upper) / 2, c * 10)
        self.record_norms(best_l2)
        if self.eps == float("inf"):
            return best_adv
        return torch.where((best_l2 <= self.eps).view(-1, 1, 1, 1), best_adv, to_ball(x, best_adv, self.eps, "l2"))

    def _reached(self, logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        return self.success(logits, y, target)
