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

import torch

from ..attacks import create_attack
from ..config import rng
from ..registry import CHECKS
from .attack_common import AttackParams, eps_list, finish, resolve_grad_mode
from .base import CheckContext, correct_mask, eval_split


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
    split = eval_split(data, params.samples)
    mode = resolve_grad_mode(model, params.grad_mode)
    clean = correct_mask(model, split.x, split.y, params.batch_size)
    norms = torch.full((len(split),), float("inf"))
    idx = clean.nonzero().flatten()
    if idx.numel():
        atk = create_attack("cw", model, eps=float("inf"), steps=params.steps, binary_steps=params.binary_steps,
                            c_init=params.c_init, kappa=params.kappa, lr=params.lr, grad_mode=mode,
                            batch_size=params.batch_size, seed=ctx.seed, eot_iter=params.eot_iter)
        x_adv = atk(split.x[idx], split.y[idx])
        fooled = ~correct_mask(model, x_adv, split.y[idx], params.batch_size)
        found = atk.min_norms.clone()
        found[~fooled] = float("inf")
        norms[idx] = found
    curve, first = [], None
    for eps in eps_list(params.eps):
        ok = clean & (norms > eps)
        curve.append({"eps": eps, "accuracy": float(ok.float().mean()) if ok.numel() else 0.0})
        if first is None:
            first = ok
    finite = norms[idx][torch.isfinite(norms[idx])] if idx.numel() else torch.zeros(0)
    extra = {"median_l2": float(finite.median()) if finite.numel() else None,
             "found_fraction": float(finite.numel() / max(1, idx.numel()))}
    flags = []
    if params.masking_checks and idx.numel() and extra["found_fraction"] < 1 - params.tolerance:
        flags.append(f"unbounded_attack_failed: possible gradient masking: unbounded C&W found adversarial examples "
                     f"for only {extra['found_fraction']:.1%} of the clean-correct points (an unbounded attack "
                     "should reach 100%); raise steps, binary_steps or c_init")
    return finish(model, split, params, ctx, attack="cw", clean=clean, robust=first, curve=curve,
                  grad_mode=mode, extra=extra, flags=flags)
