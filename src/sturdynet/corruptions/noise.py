"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise.

Hendrycks & Dietterich, arXiv 1903.12261; constants of the CIFAR-10-C generator. Noise is
per pixel, so no constant depends on the image size. Every channel of every pixel draws
its own noise (as in the original, which adds noise to the H x W x 3 array).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import normal, register_corruption, uniform


@register_corruption("gaussian_noise", "noise", (0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """``x + N(0, c^2)``, ``c`` = 0.04, 0.06, 0.08, 0.09, 0.10."""
    return x + c * normal(gen, x.shape, x)


@register_corruption("shot_noise", "noise", (500, 250, 100, 75, 50))
def shot_noise(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """``Poisson(c * x) / c`` (photon counts), ``c`` = 500, 250, 100, 75, 50."""
    counts = torch.poisson((x.detach().to("cpu", torch.float64) * c), generator=gen)
    return (counts / c).to(x.device, x.dtype)


@register_corruption("impulse_noise", "noise", (0.01, 0.02, 0.03, 0.05, 0.07))
def impulse_noise(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """Salt and pepper: each value becomes 0 or 1 (equally likely) with probability ``c``
    = 0.01, 0.02, 0.03, 0.05, 0.07 (scikit-image's ``s&p`` mode, channels independent)."""
    hit = uniform(gen, x.shape, x) < c
    salt = (uniform(gen, x.shape, x) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


@register_corruption("speckle_noise", "noise", (0.06, 0.10, 0.12, 0.16, 0.20))
def speckle_noise(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """Multiplicative noise ``x + x * N(0, c^2)``, ``c`` = 0.06, 0.10, 0.12, 0.16, 0.20 (extra corruption)."""
    return x + x * c * normal(gen, x.shape, x)
