"""The stored form of trained ternary (TTQ) weights in the bit view.

Trained Ternary Quantization (Zhu et al., arXiv 1612.01064; :mod:`sturdynet.quant.ternary`)
deploys each weight as one of ``{-W_n, 0, +W_p}`` with two learned per-layer scales.
The bit view stores it as a **2-bit two's-complement code** ``c = -2 b_1 + b_0`` per
weight plus the two float scales (not addressed, like every scale in the view):

====  ====  =========
bits  code  value
====  ====  =========
01    +1    ``+W_p``
00     0    ``0``
11    -1    ``-W_n``
10    -2    ``-2 W_n``
====  ====  =========

TTQ never writes ``10``; only a fault does. Choice (stated, as the deployed hardware
would decode it): the code is an ordinary signed 2-bit integer multiplier whose
product takes the scale of its sign, ``w = c * W_p`` for ``c > 0`` and ``w = c * W_n``
for ``c < 0``, so ``10`` decodes to ``-2 W_n``. That is what an int2 multiply-accumulate
datapath with a sign-selected output scale computes without extra decode logic, it is
the same rule the view applies to every k-bit integer (``-2^(k-1)`` is used as stored,
never clamped), and it is the conservative reading for robustness: clamping ``10`` to
``-W_n`` would make the flips ``11 -> 10`` harmless and hide a fault an integer
datapath shows. Every single-bit flip therefore goes:

- ``0``: bit 0 -> ``+W_p``, bit 1 -> ``-2 W_n``;
- ``+W_p``: bit 0 -> ``0``, bit 1 -> ``-W_n``;
- ``-W_n``: bit 0 -> ``-2 W_n``, bit 1 -> ``+W_p``;
- ``-2 W_n``: bit 0 -> ``-W_n``, bit 1 -> ``0``.

The scales are kept as one tensor ``(W_n, W_p)``. Both must be positive: the codes are
read back from the stored values by their sign.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def ternary_scale(w_n: Tensor, w_p: Tensor, name: str) -> Tensor:
    """The stored scale tensor ``(W_n, W_p)`` of a TTQ layer (float32).

    Raises:
        ValueError: a scale that is not a positive scalar.
    """
    if w_n.numel() != 1 or w_p.numel() != 1 or not (float(w_n) > 0 and float(w_p) > 0):
        raise ValueError(f"layer {name}: TTQ scales must be positive scalars to be stored as 2-bit codes, "
                         f"got W_n={w_n.detach().flatten().tolist()}, W_p={w_p.detach().flatten().tolist()}")
    return torch.stack([w_n.detach().reshape(()), w_p.detach().reshape(())]).float()


def _scales(scale: Tensor, like: Tensor) -> Tuple[Tensor, Tensor]:
    s = scale.to(device=like.device, dtype=torch.float32).reshape(-1)
    return s[0], s[1]


def ternary_values(codes: Tensor, scale: Tensor) -> Tensor:
    """Weight values (float32) of signed codes in ``[-2, 1]``: ``c * W_p`` if ``c > 0`` else ``c * W_n``."""
    w_n, w_p = _scales(scale, codes)
    c = codes.to(torch.float32)
    return torch.where(codes > 0, c * w_p, c * w_n)


def ternary_codes(w: Tensor, scale: Tensor) -> Tensor:
    """The signed codes (int64, ``[-2, 1]``) behind stored values ``w`` (inverse of :func:`ternary_values`)."""
    w_n, w_p = _scales(scale, w)
    w = w.detach().to(torch.float32)
    return torch.round(torch.where(w > 0, w / w_p, w / w_n)).long()


def ternary_bit_steps(words: Tensor, scale: Tensor) -> Tensor:
    """Change of each weight when bit ``j`` goes 0 -> 1, the other bit as stored: ``(n, 2)`` float64.

    With ``c = -2 b_1 + b_0``: bit 0 adds ``W_p`` (0 -> +1) or ``W_n`` (-2 -> -1); bit 1
    adds ``-2 W_n`` (0 -> -2) or ``-W_n - W_p`` (+1 -> -1). Exact, not a linearization.
    """
    w_n, w_p = (v.double() for v in _scales(scale, words))
    b0, b1 = (words & 1).bool(), ((words >> 1) & 1).bool()
    step0 = torch.where(b1, w_n, w_p)
    step1 = torch.where(b0, -w_n - w_p, -2 * w_n)
    return torch.stack([step0, step1], dim=1)
