"""The ``transfer`` check: adversarial examples crafted on a surrogate variant.

The runner passes the other variants' models in ``ctx.models`` (``"dense"`` is the base
model). The check (the ``transfer`` attack's threat model, done here in one pass so
that the same examples are scored on both models) crafts with the named white-box attack on the surrogate (with the
surrogate's gradient mode, ``auto`` by default) and reports the target's robust
accuracy on them, plus the surrogate's own (white-box) robust accuracy for reference.
Evaluating the dense variant against itself is the white-box attack; ``same_model``
says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.params import rng
from ..core.registry import ATTACKS, CHECKS
from .attack_common import AttackCheckParams, eps_list, finish, resolve_grad_mode
from .base import CheckContext, eval_split
from ..core.tensors import correct_mask


@dataclass(frozen=True)
class TransferParams(AttackCheckParams):
    """``steps`` and ``restarts`` go to the crafting attack when its declaration has them."""

    surrogate: str = "dense"
    attack: Literal["fgsm", "pgd", "apgd", "apgd-t", "cw", "square"] = "pgd"
    steps: int = rng(1, None, default=10)
    restarts: int = rng(1, None, default=1)


@CHECKS.register("transfer", params=TransferParams)
def transfer_check(model, data, params: TransferParams, ctx: CheckContext) -> dict:
    """Robust accuracy of ``model`` on examples crafted against ``ctx.models[surrogate]``."""
    sur = ctx.models.get(params.surrogate)
    if sur is None:
        have = ", ".join(sorted(ctx.models)) or "none"
        raise ValueError(f"transfer: surrogate variant {params.surrogate!r} is not available (variants: {have})")
    split = eval_split(data, params.samples)
    mode = resolve_grad_mode(sur, params.grad_mode)
    declared = ATTACKS.params(params.attack).__dataclass_fields__
    kw = {k: getattr(params, k) for k in ("steps", "restarts") if k in declared}
    clean = correct_mask(model, split.x, split.y, params.batch_size)
    sur_clean = correct_mask(sur, split.x, split.y, params.batch_size)
    curve, first, sur_first = [], None, None
    for eps in eps_list(params.eps):
        atk = ATTACKS.create(params.attack, sur, eps=eps, norm=params.norm, grad_mode=mode,
                            batch_size=params.batch_size, seed=ctx.seed, eot_iter=params.eot_iter, **kw)
        x_adv = atk(split.x, split.y)  # crafted once, evaluated on both models
        ok = clean & correct_mask(model, x_adv, split.y, params.batch_size)
        sur_ok = sur_clean & correct_mask(sur, x_adv, split.y, params.batch_size)
        curve.append({"eps": eps, "accuracy": float(ok.float().mean()),
                      "surrogate_accuracy": float(sur_ok.float().mean())})
        if first is None:
            first, sur_first = ok, sur_ok
    extra = {"surrogate": params.surrogate, "crafted_with": params.attack, "same_model": sur is model,
             "surrogate_robust_accuracy": float(sur_first.float().mean())}
    return finish(model, split, params, ctx, attack=f"transfer-{params.attack}", clean=clean, robust=first,
                  curve=curve, grad_mode=None, gradient_free=True, extra=extra)
