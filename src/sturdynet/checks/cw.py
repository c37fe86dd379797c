"""The ``cw`` check: robust accuracy under C&W-L2 at one or several L2 radii.

C&W is a minimum-norm attack, so one run gives every radius: a clean-correct sample is
robust at radius ``eps`` when the smallest adversarial example found (verified by a
forward pass) has an L2 norm above ``eps``. Reports the median smallest norm too, and
flags an unbounded run that fails on some points (a sign of masking or too small a
budget, Carlini et al., arXiv 1902.06705).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple, Union

from ..attacks import create_attack
from ..core.params import rng
from ..core.registry import CHECKS
from .attack_common import AttackParams, min_norm_check, resolve_grad_mode
from .base import CheckContext


@dataclass(frozen=True)
class CWParams(AttackParams):
    eps: Union[float, Tuple[float, ...]] = rng(0, None, default=0.5)
    norm: Literal["l2"] = "l2"
    steps: int = rng(1, None, default=100)
    binary_steps: int = rng(1, None, default=9)
    c_init: float = rng(0, None, "(]", default=1e-3)
    kappa: float = rng(0, None, default=0.0)
    lr: float = rng(0, None, "(]", default=0.01)
    samples: Optional[int] = rng(1, None, default=500)


@CHECKS.register("cw", params=CWParams)
def cw_check(model, data, params: CWParams, ctx: CheckContext) -> dict:
    """Robust accuracy at each L2 radius from one unbounded C&W-L2 run."""
    mode = resolve_grad_mode(model, params.grad_mode)
    return min_norm_check(
        model, data, params, ctx, attack="cw", label="C&W", hint="raise steps, binary_steps or c_init",
        grad_mode=mode, make=lambda: create_attack(
            "cw", model, eps=float("inf"), steps=params.steps, binary_steps=params.binary_steps, c_init=params.c_init,
            kappa=params.kappa, lr=params.lr, grad_mode=mode, batch_size=params.batch_size, seed=ctx.seed,
            eot_iter=params.eot_iter))
