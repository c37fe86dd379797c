"""Digital corruptions: brightness, contrast, pixelate, JPEG compression and (extra) saturate.

Hendrycks & Dietterich, arXiv 1903.12261; constants of the CIFAR-10-C generator. None of
them has a spatial constant except pixelate, whose factor is relative to the image size.
Brightness and saturate edit HSV value and saturation; they are computed in RGB with the
hue kept (no HSV round trip): every channel is ``V * (1 - S * g(hue))``.
"""
from __future__ import annotations

import io
from typing import Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .base import register_corruption
from .ops import box_resize


def _value_saturation(x: Tensor) -> Tuple[Tensor, Tensor]:
    """HSV value (the channel maximum) and saturation ((max - min) / max, 0 where max = 0), (N, 1, H, W)."""
    v = x.amax(1, keepdim=True)
    s = torch.where(v > 0, (v - x.amin(1, keepdim=True)) / v.clamp_min(1e-12), torch.zeros_like(v))
    return v, s


@register_corruption("brightness", "digital", (0.05, 0.1, 0.15, 0.2, 0.3))
def brightness(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """HSV value ``V -> min(V + c, 1)``, hue and saturation kept; ``c`` = 0.05, 0.1, 0.15, 0.2, 0.3.
    For grey (and one-channel) images this is ``min(x + c, 1)``."""
    v, _ = _value_saturation(x)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


@register_corruption("contrast", "digital", (0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """``(x - mean) * c + mean``, ``mean`` per image and channel; ``c`` = 0.75, 0.5, 0.4, 0.3, 0.15."""
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


@register_corruption("saturate", "digital", ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)))
def saturate(x: Tensor, c: Tuple[float, float], scale: float, gen: torch.Generator) -> Tensor:
    """HSV saturation ``S -> clip(S * a + b, 0, 1)``, (a, b) = (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1),
    (2.5, 0.2) (extra corruption; severities 1-2 desaturate, 3-5 saturate, so its strength is not
    monotone in severity). Grey pixels have hue 0 (red), as in scikit-image. One-channel images
    have no saturation and are returned unchanged."""
    if x.shape[1] == 1:
        return x.clone()
    v, s = _value_saturation(x)
    s_new = (s * c[0] + c[1]).clamp(0, 1)
    coloured = v - (v - x) * s_new / s.clamp_min(1e-12)
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)  # hue 0 is red
    return torch.where(s > 0, coloured, grey)


@register_corruption("pixelate", "digital", (0.95, 0.9, 0.85, 0.75, 0.65))
def pixelate(x: Tensor, c: float, scale: float, gen: torch.Generator) -> Tensor:
    """Shrink to ``int(H * c) x int(W * c)`` and enlarge back, both with Pillow's BOX filter;
    ``c`` = 0.95, 0.9, 0.85, 0.75, 0.65 (a relative factor: no size adaptation needed; on 8x8
    images severities 1 and 2, and 3 and 4, give the same 7x7 and 6x6 grids)."""
    h, w = x.shape[2], x.shape[3]
    small = box_resize(x, max(1, int(h * c)), max(1, int(w * c)))
    return box_resize(small, h, w)


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """Encode every image as an 8-bit JPEG of ``quality`` with Pillow and decode it (greyscale JPEG
    for one channel). Deterministic; a loop over the images on the CPU."""
    arr = (x.detach().to("cpu", torch.float64) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty(arr.shape, dtype=np.uint8)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


@register_corruption("jpeg_compression", "digital", (80, 65, 58, 50, 40))
def jpeg_compression(x: Tensor, c: int, scale: float, gen: torch.Generator) -> Tensor:
    """JPEG round trip at quality 80, 65, 58, 50, 40 (Pillow's encoder, as in the original).
    The output is 8-bit: even an uncompressed image is rounded to multiples of 1/255."""
    return jpeg_roundtrip(x, c)
