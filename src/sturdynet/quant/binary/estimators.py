"""Gradient estimators for the sign function (forward is always ``sign``).

Each estimator is the derivative that stands in for ``d sign(x) / dx`` (zero almost
everywhere) in the backward pass:

- ``ste``: identity, ``1`` (Bengio et al., arXiv 1308.3432);
- ``clipped_ste``: ``1_{|x| <= 1}`` (the "hardtanh" STE of BinaryNet, arXiv 1602.02830);
- ``approx_sign``: ``2 - 2|x|`` for ``|x| <= 1``, else ``0`` (Bi-Real Net, arXiv 1808.00278,
  the derivative of its piecewise-quadratic ApproxSign);
- ``reste``: ReSTE (arXiv 2308.06689), the derivative of the rectified power function
  ``sign(x) |x|^(1/o)``: ``(1/o) |x|^(1/o - 1)`` for ``eps < |x| <= t``; for ``|x| <= eps`` the
  slope of the secant through 0 and ``(eps, eps^(1/o))``, i.e. ``eps^(1/o) / eps`` (the
  derivative is unbounded at 0 for ``o > 1``); ``0`` for ``|x| > t``. The defaults
  ``eps = 0.1`` and ``t = 1.5`` are those of the authors' code (github.com/DravenALG/ReSTE,
  ``interval = 0.1``, ``t = 1.5``); ``o`` is annealed from 1 to 3 during training by the
  ``reste_anneal`` callback (:mod:`sturdynet.quant.binary.reste`).

Deployed values: ``torch.sign``, so an exact zero stays zero (pruned weights and zero
padding contribute nothing); every other value is +-1.
"""
from __future__ import annotations

from typing import Literal, Tuple

import torch
from torch import Tensor

from ..base import outer_bounds

ESTIMATORS: Tuple[str, ...] = ("ste", "clipped_ste", "approx_sign", "reste")
Estimator = Literal["ste", "clipped_ste", "approx_sign", "reste"]  # for params dataclasses


def check_estimator(name: str) -> str:
    """Return ``name`` if it is a known estimator, else raise a ValueError listing them."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown sign estimator {name!r}; use one of {', '.join(ESTIMATORS)}")
    return name


def estimator_slope(x: Tensor, name: str, o: float = 1.0, eps: float = 0.1, t: float = 1.5) -> Tensor:
    """The estimator's stand-in derivative of ``sign`` at ``x`` (same shape as ``x``)."""
    check_estimator(name)
    a = x.abs()
    if name == "ste":
        return torch.ones_like(x)
    if name == "clipped_ste":
        return (a <= 1).to(x.dtype)
    if name == "approx_sign":
        return torch.where(a <= 1, 2 - 2 * a, torch.zeros_like(x))
    if o < 1:
        raise ValueError(f"ReSTE order o must be >= 1, got {o}")
    if not 0 < eps < t:
        raise ValueError(f"ReSTE needs 0 < eps < t, got eps={eps}, t={t}")
    inv = 1.0 / o
    secant = eps ** inv / eps
    power = inv * a.clamp(min=eps) ** (inv - 1.0)
    out = torch.where(a <= eps, torch.full_like(x, secant), power)
    return torch.where(a <= t, out, torch.zeros_like(x))


class SignWithEstimator(torch.autograd.Function):
    """``sign(x)`` forward; ``grad * estimator_slope(x)`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, name: str, o: float, eps: float, t: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.cfg = (name, o, eps, t)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        name, o, eps, t = ctx.cfg
        if name == "ste":
            return grad, None, None, None, None
        if name == "clipped_ste":  # the common cases without the slope tensor (fewer passes)
            # grad where -1 <= x <= 1: one float kernel whose open interval between the
            # neighbours of -1 and 1 is exactly that closed one (no bool mask tensor)
            return torch.ops.aten.hardtanh_backward(grad, x, *outer_bounds(-1, 1, x.dtype)), None, None, None, None
        if name == "approx_sign":  # 2 - 2|x| is <= 0 exactly where |x| >= 1
            return x.abs().mul_(-2).add_(2).clamp_(min=0).mul_(grad), None, None, None, None
        return grad * estimator_slope(x, name, o, eps, t), None, None, None, None


def sign_ste(x: Tensor, name: str, o: float = 1.0, eps: float = 0.1, t: float = 1.5) -> Tensor:
    """``sign(x)`` whose backward is the named estimator."""
    check_estimator(name)
    return SignWithEstimator.apply(x, name, float(o), float(eps), float(t))
