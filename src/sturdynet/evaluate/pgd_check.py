"""The ``pgd`` check: robust accuracy under PGD at one or several eps values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple, Union

from ..attacks import create_attack
from ..config import rng
from ..nn.grad_mode import has_estimators
from ..registry import CHECKS
from .base import CheckContext, SampleParams, correct_mask, eval_split, summarize


@dataclass(frozen=True)
class PGDParams(SampleParams):
    eps: Union[float, Tuple[float, ...]] = rng(0, None, default=8 / 255)
    steps: int = rng(1, None, default=10)
    alpha: Optional[float] = rng(0, None, "(]", default=None)
    restarts: int = rng(1, None, default=1)
    random_start: bool = True
    norm: Literal["linf", "l2"] = "linf"
    grad_mode: Literal["auto", "true", "ste"] = "auto"
    samples: Optional[int] = rng(1, None, default=1000)


def eps_list(eps) -> Tuple[float, ...]:
    return tuple(eps) if isinstance(eps, tuple) else (float(eps),)


@CHECKS.register("pgd", params=PGDParams)
def pgd_check(model, data, params: PGDParams, ctx: CheckContext) -> dict:
    """Robust accuracy under PGD; ``accuracy`` is at the first eps, ``curve`` lists all.

    ``grad_mode: auto`` attacks models with quantizers through their straight-through
    estimator (the deployed forward pass is kept) and float models with true gradients.
    """
    split = eval_split(data, params.samples)
    mode = params.grad_mode
    if mode == "auto":
        mode = "ste" if has_estimators(model) else "true"
    curve, first = [], None
    for eps in eps_list(params.eps):
        atk = create_attack("pgd", model, eps=eps, steps=params.steps, alpha=params.alpha,
                            restarts=params.restarts, random_start=params.random_start, norm=params.norm,
                            grad_mode=mode, batch_size=params.batch_size, seed=ctx.seed)
        x_adv = atk(split.x, split.y)
        correct = correct_mask(model, x_adv, split.y, params.batch_size)
        curve.append({"eps": eps, "accuracy": float(correct.float().mean())})
        if first is None:
            first = correct
    return summarize(first, eps=eps_list(params.eps)[0], grad_mode=mode, curve=curve)
