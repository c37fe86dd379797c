"""Backdoor triggers stamped onto images in [0, 1].

Two trigger types, both written as one convex blend ``x' = (1 - m) * x + m * p`` with a
mask ``m`` and a pattern ``p`` of the image's shape, so a triggered image stays in [0, 1]:

* ``patch`` -- the BadNets trigger of Gu, Dolan-Gavitt & Garg, "BadNets: Identifying
  Vulnerabilities in the Machine Learning Model Supply Chain" (arXiv 1708.06733): a
  small pattern (``checkerboard`` or a ``white`` square) replaces the pixels of a square
  patch, by default in the bottom-right corner. ``m`` is 1 on the patch, 0 elsewhere.
  The patch side is ``pixels`` when given, else ``round(size * min(H, W))`` (at least
  1), so one recipe works on 8x8 digits and 32x32 CIFAR-10 alike.
* ``blend`` -- the blended-injection trigger of Chen et al., "Targeted Backdoor Attacks
  on Deep Learning Systems Using Data Poisoning" (arXiv 1712.05526): a fixed random
  pattern (each pixel and channel uniform in [0, 1], drawn from ``pattern_seed``)
  blended over the whole image with ratio ``alpha`` (``m = alpha`` everywhere).

The trigger depends on its parameters and the image shape only, so the poisoned
training set and the ``backdoor`` check rebuild the same trigger from the same settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import torch
from torch import Tensor

from ..core.params import ConfigError, rng

Position = Literal["bottom_right", "bottom_left", "top_right", "top_left", "center"]


@dataclass(frozen=True)
class TriggerParams:
    """How the trigger looks (see the module docstring).

    ``size``, ``pixels``, ``pattern`` and ``position`` apply to ``type: patch``;
    ``alpha`` and ``pattern_seed`` to ``type: blend``.
    """

    type: Literal["patch", "blend"] = "patch"
    pattern: Literal["checkerboard", "white"] = "checkerboard"
    size: float = rng(0, 1, "(]", default=0.25)
    pixels: Optional[int] = rng(1, None, default=None)
    position: Position = "bottom_right"
    alpha: float = rng(0, 1, "(]", default=0.2)
    pattern_seed: int = rng(0, None, default=0)


def patch_side(params: TriggerParams, height: int, width: int) -> int:
    """The patch side in pixels for ``height`` x ``width`` images."""
    if params.pixels is not None:
        return params.pixels
    return max(1, int(round(params.size * min(height, width))))


def check_fits(params: TriggerParams, image_size: Tuple[int, int], path: str = "trigger") -> None:
    """Raise a ConfigError naming ``<path>.pixels`` when the patch is larger than the image."""
    h, w = image_size
    if params.type == "patch" and params.pixels is not None and params.pixels > min(h, w):
        raise ConfigError(f"{path}.pixels", f"a {params.pixels}-pixel patch does not fit {h}x{w} images")


def _origin(position: str, side: int, height: int, width: int) -> Tuple[int, int]:
    rows = {"top": 0, "bottom": height - side}
    cols = {"left": 0, "right": width - side}
    if position == "center":
        return (height - side) // 2, (width - side) // 2
    vert, horiz = position.split("_")
    return rows[vert], cols[horiz]


def trigger_tensors(params: TriggerParams, shape: Tuple[int, int, int]) -> Tuple[Tensor, Tensor]:
    """The ``(mask, pattern)`` pair of the trigger for images of ``shape`` (C, H, W).

    Both are float32 tensors of that shape with values in [0, 1].

    Raises:
        ValueError: when the patch does not fit the image.
    """
    c, h, w = shape
    if params.type == "blend":
        g = torch.Generator().manual_seed(params.pattern_seed)
        pattern = torch.rand((c, h, w), generator=g)
        return torch.full((c, h, w), float(params.alpha)), pattern
    check_fits(params, (h, w))
    side = patch_side(params, h, w)
    r0, c0 = _origin(params.position, side, h, w)
    mask = torch.zeros((c, h, w))
    pattern = torch.zeros((c, h, w))
    mask[:, r0:r0 + side, c0:c0 + side] = 1.0
    if params.pattern == "white":
        tile = torch.ones((side, side))
    else:
        idx = torch.arange(side)
        tile = ((idx.view(-1, 1) + idx.view(1, -1)) % 2 == 0).float()
    pattern[:, r0:r0 + side, c0:c0 + side] = tile
    return mask, pattern


def apply_trigger(x: Tensor, params: TriggerParams) -> Tensor:
    """A copy of images ``x`` (N, C, H, W) in [0, 1] with the trigger stamped on."""
    if x.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
    mask, pattern = trigger_tensors(params, tuple(x.shape[1:]))
    mask, pattern = mask.to(device=x.device, dtype=x.dtype), pattern.to(device=x.device, dtype=x.dtype)
    return (x * (1 - mask) + mask * pattern).clamp_(0.0, 1.0)
