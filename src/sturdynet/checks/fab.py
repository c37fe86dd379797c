"""The ``fab`` check: robust accuracy at every eps from one unbounded FAB run.

FAB (arXiv 1907.02044) is a minimum-norm attack, so, as for ``cw``, one run gives
every radius: a clean-correct sample is robust at ``eps`` when the smallest adversarial
example FAB found is longer than ``eps`` (in the check's norm). ``attack: fab-t`` runs
AutoAttack's multi-target FAB-T (arXiv 2003.01690) against ``n_target_classes``
classes. Restarts run on the points where nothing was found yet. Reports
``median_linf`` / ``median_l2`` and ``found_fraction`` too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..attacks import create_attack
from ..core.params import rng
from ..core.registry import CHECKS
from .attack_common import AttackParams, min_norm_check, resolve_grad_mode
from .base import CheckContext


@dataclass(frozen=True)
class FABParams(AttackParams):
    attack: Literal["fab", "fab-t"] = "fab"
    steps: int = rng(1, None, default=100)
    restarts: int = rng(1, None, default=1)
    n_target_classes: int = rng(1, None, default=9)
    alpha_max: float = rng(0, 1, default=0.1)
    eta: float = rng(1, None, default=1.05)
    beta: float = rng(0, 1, "()", default=0.9)


@CHECKS.register("fab", params=FABParams)
def fab_check(model, data, params: FABParams, ctx: CheckContext) -> dict:
    """Robust accuracy at each eps and the minimal norms, from one unbounded FAB or FAB-T run."""
    mode = resolve_grad_mode(model, params.grad_mode)
    extra = {"n_target_classes": params.n_target_classes} if params.attack == "fab-t" else {}
    return min_norm_check(
        model, data, params, ctx, attack=params.attack, label="FAB", hint="raise steps or restarts", grad_mode=mode,
        make=lambda: create_attack(
            params.attack, model, eps=float("inf"), norm=params.norm, steps=params.steps, restarts=params.restarts,
            alpha_max=params.alpha_max, eta=params.eta, beta=params.beta, grad_mode=mode,
            batch_size=params.batch_size, seed=ctx.seed, eot_iter=params.eot_iter, **extra))
