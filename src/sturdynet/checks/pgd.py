"""The gradient and score-based attack checks: ``fgsm``, ``pgd``, ``apgd``, ``square``.

Each accepts one eps or a list (``curve``); see :mod:`.attack_common` for the
metrics they report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ..attacks import create_attack
from ..core.params import rng
from ..core.registry import CHECKS
from .attack_common import AttackParams, eps_list, finish, resolve_grad_mode, run_curve
from .base import CheckContext, eval_split


@dataclass(frozen=True)
class FGSMParams(AttackParams):
    pass


@dataclass(frozen=True)
class PGDParams(AttackParams):
    steps: int = rng(1, None, default=10)
    alpha: Optional[float] = rng(0, None, "(]", default=None)
    restarts: int = rng(1, None, default=1)
    random_start: bool = True


@dataclass(frozen=True)
class APGDParams(AttackParams):
    """``loss: dlr-t`` runs APGD-T (targeted DLR over ``n_target_classes`` classes)."""

    steps: int = rng(1, None, default=100)
    loss: Literal["ce", "dlr", "dlr-t"] = "ce"
    restarts: int = rng(1, None, default=1)
    n_target_classes: int = rng(1, None, default=9)


@dataclass(frozen=True)
class SquareParams(AttackParams):
    n_queries: int = rng(1, None, default=5000)
    p_init: float = rng(0, 1, "(]", default=0.8)
    restarts: int = rng(1, None, default=1)


def _gradient_check(name: str, model, data, params: AttackParams, ctx: CheckContext, **attack_kw) -> dict:
    split = eval_split(data, params.samples)
    mode = resolve_grad_mode(model, params.grad_mode)
    attack = attack_kw.pop("attack", name)

    def make(eps: float):
        return create_attack(attack, model, eps=eps, norm=params.norm, grad_mode=mode,
                             batch_size=params.batch_size, seed=ctx.seed, eot_iter=params.eot_iter, **attack_kw)

    clean, robust, curve = run_curve(model, split, eps_list(params.eps), make, params.batch_size)
    return finish(model, split, params, ctx, attack=name, clean=clean, robust=robust, curve=curve, grad_mode=mode)


@CHECKS.register("fgsm", params=FGSMParams)
def fgsm_check(model, data, params: FGSMParams, ctx: CheckContext) -> dict:
    """Robust accuracy under FGSM (one signed-gradient step of size eps)."""
    return _gradient_check("fgsm", model, data, params, ctx)


@CHECKS.register("pgd", params=PGDParams)
def pgd_check(model, data, params: PGDParams, ctx: CheckContext) -> dict:
    """Robust accuracy under PGD (best iterate per sample over steps and restarts)."""
    return _gradient_check("pgd", model, data, params, ctx, steps=params.steps, alpha=params.alpha,
                           restarts=params.restarts, random_start=params.random_start)


@CHECKS.register("apgd", params=APGDParams)
def apgd_check(model, data, params: APGDParams, ctx: CheckContext) -> dict:
    """Robust accuracy under APGD-CE, APGD-DLR or APGD-T."""
    if params.loss == "dlr-t":
        return _gradient_check("apgd-t", model, data, params, ctx, steps=params.steps, restarts=params.restarts,
                               n_target_classes=params.n_target_classes)
    return _gradient_check(f"apgd-{params.loss}", model, data, params, ctx, attack="apgd", steps=params.steps,
                           loss=params.loss, restarts=params.restarts)


@CHECKS.register("square", params=SquareParams)
def square_check(model, data, params: SquareParams, ctx: CheckContext) -> dict:
    """Robust accuracy under the gradient-free Square attack (``grad_mode`` is unused)."""
    split = eval_split(data, params.samples)

    def make(eps: float):
        return create_attack("square", model, eps=eps, norm=params.norm, n_queries=params.n_queries,
                             p_init=params.p_init, restarts=params.restarts, batch_size=params.batch_size,
                             seed=ctx.seed, eot_iter=params.eot_iter)

    clean, robust, curve = run_curve(model, split, eps_list(params.eps), make, params.batch_size)
    return finish(model, split, params, ctx, attack="square", clean=clean, robust=robust, curve=curve,
                  grad_mode=None, gradient_free=True, extra={"n_queries": params.n_queries})
