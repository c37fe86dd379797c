"""Blur corruptions: defocus, glass, motion, zoom and (extra) Gaussian blur.

Hendrycks & Dietterich, arXiv 1903.12261; constants of the CIFAR-10-C generator, with every
radius, sigma and displacement multiplied by ``scale = min(H, W) / 32`` (zoom factors are
relative and stay as they are). On 8x8 images (scale 0.25) the defocus and Gaussian kernels
fall below a pixel: defocus blur is then close to the identity at every severity, which is
what the CIFAR-10 blur amounts to at that resolution.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import register_corruption, uniform
from .ops import depthwise, gaussian_filter, gaussian_kernel1d, motion_blur as _motion, zoom_center


def disk_kernel(radius: float, alias_sigma: float, alias_radius: int = 1) -> Tensor:
    """The defocus kernel: the integer points within ``radius`` of the centre (normalised), smoothed
    by a (2 * alias_radius + 1)^2 sampled Gaussian of ``alias_sigma`` (OpenCV's 3x3 anti-aliasing)."""
    half = math.ceil(radius) + alias_radius
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) <= radius ** 2).to(torch.float64)
    disk = disk / disk.sum()
    g = gaussian_kernel1d(alias_sigma, alias_radius)
    k = F.conv2d(disk[None, None], (g.view(-1, 1) * g.view(1, -1))[None, None], padding=alias_radius)[0, 0]
    return k / k.sum()


@register_corruption("defocus_blur", "blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)))
def defocus_blur(x: Tensor, c: Tuple[float, float], scale: float, gen: torch.Generator) -> Tensor:
    """Convolution with an anti-aliased disk, (radius, alias sigma) = (0.3, 0.4), (0.4, 0.5), (0.5, 0.6),
    (1, 0.2), (1.5, 0.1) pixels at 32x32; both scale, the 3x3 anti-aliasing grows to
    ``2 * max(1, round(scale)) + 1``. Borders reflect (OpenCV's default)."""
    k = disk_kernel(c[0] * scale, c[1] * scale, max(1, round(scale)))
    return depthwise(x, k, "reflect")


@register_corruption("gaussian_blur", "blur", (0.4, 0.6, 0.7, 0.8, 1.0))
def gaussian_blur(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """Gaussian blur with sigma 0.4, 0.6, 0.7, 0.8, 1.0 pixels at 32x32 (scales), support 4 sigma,
    edges replicated (scikit-image's defaults). Extra corruption."""
    return gaussian_filter(x, c * scale, 4.0, "replicate")


def local_shuffle(x: Tensor, delta: int, iterations: int, gen: torch.Generator) -> Tensor:
    """Glass-blur pixel shuffle: visit pixels from the bottom-right, swapping each with the pixel
    ``(dy, dx)`` away, ``dx, dy`` uniform integers in [-delta, delta) drawn per image and visit."""
    n, c, h, w = x.shape
    rows, cols = range(h - delta, delta, -1), range(w - delta, delta, -1)
    if not rows or not cols:
        return x
    d = torch.randint(-delta, delta, (iterations, len(rows), len(cols), n, 2), generator=gen).to(x.device)
    flat = x.reshape(n, c, h * w).clone()
    batch = torch.arange(n, device=x.device)
    for it in range(iterations):
        for i, r in enumerate(rows):
            for j, col in enumerate(cols):
                src = r * w + col
                dst = (r + d[it, i, j, :, 1]) * w + col + d[it, i, j, :, 0]
                here = flat[:, :, src].clone()
                flat[:, :, src] = flat[batch, :, dst]
                flat[batch, :, dst] = here
    return flat.view(n, c, h, w)


@register_corruption("glass_blur", "blur", ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)))
def glass_blur(x: Tensor, c: Tuple[float, int, int], scale: float, gen: torch.Generator) -> Tensor:
    """Gaussian blur, local pixel shuffle, Gaussian blur; (sigma, max shift, iterations) = (0.05, 1, 1),
    (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2) at 32x32. Sigma scales; the shift is
    ``max(1, round(1 * scale))`` pixels (a shift cannot be under a pixel, so on images under 48x48 it
    is relatively larger than on CIFAR-10). A Python loop over pixel positions (vectorised over the
    batch): the slowest corruption."""
    sigma, delta, iterations = c
    y = gaussian_filter(x, sigma * scale, 4.0, "replicate")
    y = local_shuffle(y, max(1, round(delta * scale)), iterations, gen)
    return gaussian_filter(y, sigma * scale, 4.0, "replicate")


@register_corruption("motion_blur", "blur", ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)))
def motion_blur(x: Tensor, c: Tuple[float, float], scale: float, gen: torch.Generator) -> Tensor:
    """ImageMagick's motion blur, (radius, sigma) = (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5) pixels at
    32x32 (the tap spacing scales), direction uniform in [-45, 45] degrees per image."""
    angle = uniform(gen, (x.shape[0],), x, -45.0, 45.0)
    return _motion(x, c[0], c[1], angle, scale)


@register_corruption("zoom_blur", "blur", (6, 11, 16, 21, 26))
def zoom_blur(x: Tensor, c: int, scale: float, gen: torch.Generator) -> Tensor:
    """Mean of the image and its central zooms by 1.00, 1.01, ... (6, 11, 16, 21, 26 factors, up to
    1.05, 1.10, 1.15, 1.20, 1.25); the original also counts the image once more through factor 1.00.
    Deviation: zoom about the centre by bilinear resampling instead of scipy's crop-zoom-trim."""
    out = x.clone()
    for k in range(c):
        out = out + zoom_center(x, 1.0 + 0.01 * k)
    return out / (c + 1)
