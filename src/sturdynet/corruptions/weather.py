"""Weather corruptions: snow, fog, a procedural frost stand-in and (extra) spatter.

Hendrycks & Dietterich, arXiv 1903.12261; constants of the CIFAR-10-C generator. Random
layers (snow flakes, fog, liquid) are drawn per image at the image's own resolution (one
value per pixel); spatial constants (motion-blur length, smoothing sigmas) scale with
``min(H, W) / 32``; the fog fractal is generated at the next power of two >= max(H, W)
(32 for CIFAR-10, as in the original).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .base import luminance, normal, register_corruption, uniform
from .ops import depthwise, fractal_layer, gaussian_filter, motion_blur, zoom_center

SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))


@register_corruption("snow", "weather", SNOW)
def snow(x: Tensor, c: Tuple[float, ...], scale: float, gen: torch.Generator) -> Tensor:
    """Snow flakes: a layer ``N(mean, std)`` zoomed by ``zoom``, values under ``threshold`` zeroed,
    motion-blurred (radius, sigma; scale) at an angle in [-135, -45] degrees, added with its 180-degree
    rotation to the image, which is first whitened: ``mix * x + (1 - mix) * max(x, 1.5 * grey + 0.5)``.
    Constants (mean, std, zoom, threshold, radius, sigma, mix) per severity: see ``SNOW``."""
    mean, std, zoom, threshold, radius, sigma, mix = c
    n, _, h, w = x.shape
    layer = mean + std * normal(gen, (n, 1, h, w), x)
    if zoom > 1:
        layer = zoom_center(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = motion_blur(layer, radius, sigma, uniform(gen, (n,), x, -135.0, -45.0), scale)
    base = mix * x + (1 - mix) * torch.maximum(x, luminance(x) * 1.5 + 0.5)
    return base + layer + layer.flip(2, 3)


@register_corruption("fog", "weather", ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)))
def fog(x: Tensor, c: Tuple[float, float], scale: float, gen: torch.Generator) -> Tensor:
    """Add ``strength *`` a plasma fractal (roughness ``decay``) and rescale by ``max / (max + strength)``
    (``max``: the image's largest value); (strength, decay) = (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2),
    (1.5, 1.75). The same fog covers every channel."""
    strength, decay = c
    top = x.amax((1, 2, 3), keepdim=True)
    return (x + strength * fractal_layer(x, decay, gen)) * top / (top + strength)


def frost_texture(x: Tensor, gen: torch.Generator, scale: float) -> Tensor:
    """(N, C, H, W) procedural ice in [0, 1]: a rough plasma fractal for the density, times sparse
    bright needles (thresholded noise motion-blurred along a random direction), tinted pale blue."""
    n, _, h, w = x.shape
    density = fractal_layer(x, 1.5, gen)
    seeds = (uniform(gen, (n, 1, h, w), x) > 0.85).to(x.dtype)
    needles = motion_blur(seeds, 4, 4, uniform(gen, (n,), x, 0.0, 360.0), scale)
    ice = (0.6 * density + 2.5 * needles * (0.5 + density)).clamp(0, 1)
    if x.shape[1] == 3:
        ice = ice * torch.tensor([0.85, 0.93, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ice


@register_corruption("frost_procedural", "weather", ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
                     substitute=True)
def frost_procedural(x: Tensor, c: Tuple[float, float], scale: float, gen: torch.Generator) -> Tensor:
    """A stand-in for frost, NOT the paper's frost: the original blends ``a * x + b * frost`` with a
    random crop of one of six frost photographs, which sturdynet does not ship. Here the same blend
    and weights (a, b) = (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45) use a procedural
    ice texture (:func:`frost_texture`) whose statistics are not matched to the photographs, so
    its errors are not comparable with published frost numbers."""
    return c[0] * x + c[1] * frost_texture(x, gen, scale)


_WATER = (175 / 255, 238 / 255, 238 / 255)
_MUD = (63 / 255, 42 / 255, 20 / 255)
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)


def _colour(rgb: Tuple[float, float, float], x: Tensor) -> Tensor:
    """(1, C, 1, 1) colour; its grey level for one-channel images."""
    c = torch.tensor(rgb, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return luminance(c) if x.shape[1] == 1 else c


@register_corruption("spatter", "weather", ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                                            (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                                            (0.65, 0.1, 0.5, 0.68, 0.6, 1)))
def spatter(x: Tensor, c: Tuple[float, ...], scale: float, gen: torch.Generator) -> Tensor:
    """Liquid splashes (extra corruption): a liquid layer ``N(mean, std)`` smoothed by ``sigma`` (scales)
    and thresholded. Severities 4-5 (mud): the layer's mask, smoothed by ``sigma2`` (scales) and cut
    under 0.8, paints mud brown over the image, as in the original. Severities 1-3 (water): pale
    turquoise ``intensity * m`` is added, with ``m`` the liquid layer embossed by the original's 3x3
    kernel and scaled to max 1; deviation: the original's Canny-edge distance transform, histogram
    equalisation and 3x3 box blurs before the emboss are left out. Constants (mean, std, sigma,
    threshold, intensity or sigma2, mud): (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
    (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)."""
    mean, std, sigma, threshold, strength, mud = c
    n, _, h, w = x.shape
    liquid = gaussian_filter(mean + std * normal(gen, (n, 1, h, w), x), sigma * scale, 4.0, "replicate")
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = gaussian_filter((liquid > threshold).to(x.dtype), strength * scale, 4.0, "replicate")
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        return x * (1 - m) + _colour(_MUD, x) * m
    m = depthwise(liquid, _EMBOSS, "reflect").clamp_min(0)
    m = m / m.amax((1, 2, 3), keepdim=True).clamp_min(1e-12) * strength
    return x + m * _colour(_WATER, x)
