"""Batch-level training augmentations on (N, C, H, W) tensors, seeded by a generator."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    m = torch.rand(x.shape[0], generator=generator) < 0.5
    out = x.clone()
    out[m] = out[m].flip(-1)
    return out


def crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop after zero padding by ``pad`` (``pad`` = H/8 for small images), then flip.

    The standard CIFAR recipe (pad 4 on 32x32); on 8x8 digits the pad is 1.
    """
    n, _, h, w = x.shape
    pad = max(1, min(pad, h // 8))
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (n, w)
    idx_n = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return flip(out.contiguous(), generator)


AUGMENTS = {"none": lambda x, g: x, "flip": flip, "crop_flip": crop_flip}


def augment(name: str, x: Tensor, generator: torch.Generator) -> Tensor:
    """Apply the named augmentation (``none``, ``flip`` or ``crop_flip``)."""
    try:
        fn = AUGMENTS[name]
    except KeyError:
        raise ValueError(f"unknown augmentation {name!r}; available: {', '.join(AUGMENTS)}") from None
    return fn(x, generator)
