"""Elastic transform: a random affine warp followed by a smooth random displacement field.

Hendrycks & Dietterich, arXiv 1903.12261 (after Simard et al.'s elastic distortions); the
CIFAR-10-C generator writes its constants as fractions of the image size (``IMSIZE * f``),
so here they are fractions of ``min(H, W)``: at 32x32 exactly the original's pixels.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .base import register_corruption, uniform
from .ops import gaussian_filter, pixel_grid, sample_at

#: (alpha, sigma, affine) as fractions of the image size, per severity
ELASTIC = ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))


def random_affine(x: Tensor, jitter: float, gen: torch.Generator) -> Tensor:
    """Warp by the affine map that moves three points around the centre (at +-size/3) by
    ``U(-jitter, jitter)`` pixels each (OpenCV's getAffineTransform + warpAffine, bilinear,
    borders reflected)."""
    n, _, h, w = x.shape
    cx, cy, r = w // 2, h // 2, min(h, w) // 3
    src = torch.tensor([[cx + r, cy + r], [cx + r, cy - r], [cx - r, cy - r]], dtype=torch.float64)
    dst = src + jitter * (2 * torch.rand((n, 3, 2), generator=gen, dtype=torch.float64) - 1)
    ones = torch.ones(3, 1, dtype=torch.float64)
    # forward map M (2x3) with M [p; 1] = p': solve [src 1] M^T = dst, then invert for sampling
    m = torch.linalg.solve(torch.cat([src, ones], 1).expand(n, 3, 3), dst).transpose(1, 2)
    a_inv = torch.linalg.inv(m[:, :, :2])
    t = m[:, :, 2:]
    u, v = pixel_grid(1, h, w, src)
    pts = torch.stack([u.reshape(-1), v.reshape(-1)]).expand(n, 2, h * w) - t
    back = (a_inv @ pts).to(x.device, x.dtype)
    return sample_at(x, back[:, 0].view(n, h, w), back[:, 1].view(n, h, w), "reflection")


@register_corruption("elastic_transform", "digital", ELASTIC)
def elastic_transform(x: Tensor, c: Tuple[float, float, float], scale: float, gen: torch.Generator) -> Tensor:
    """Random affine (jitter ``affine * size``), then every pixel moves by ``alpha * size`` times a field of
    ``U(-1, 1)`` noise smoothed by a Gaussian of ``sigma * size`` (support 3 sigma); (alpha, sigma,
    affine) per severity in ``ELASTIC``. The same field moves every channel. Deviation: border
    reflection about the edge pixels for the displacement sampling (scipy's ``reflect`` repeats them)."""
    alpha, sigma, jitter = c
    size = min(x.shape[2], x.shape[3])
    n, _, h, w = x.shape
    y = random_affine(x, jitter * size, gen)
    field = uniform(gen, (n, 2, h, w), x, -1.0, 1.0)
    field = gaussian_filter(field, sigma * size, 3.0, "reflect") * (alpha * size)
    u, v = pixel_grid(n, h, w, x)
    return sample_at(y, u + field[:, 0], v + field[:, 1], "reflection")
