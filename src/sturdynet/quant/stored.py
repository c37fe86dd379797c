"""Stored codes: how a deployed weight tensor sits in memory, word by word.

A *deployed* layer keeps its weight as the decoded stored values and, as its
``weight_quantizer``, a :class:`StoredCodes` object (identity forward) that converts
between those values and the stored words. Every training-time quantizer names its
storage through ``Quantizer.stored(w, deployed)`` (:mod:`sturdynet.quant.base`); the
fault bit view (:mod:`sturdynet.faults.bitview`) reads and writes bits only through
``encode`` / ``decode`` / ``bit_steps`` of these classes.

Formats (``kind``, bits per word, signedness):

- :class:`IntCodes` (``int``, k, signed): k-bit two's-complement integers ``q`` times a
  step ``s`` (per tensor, per output channel or per weight), ``w = q * s``. A word
  decodes as stored: ``-2^(k-1)`` is used, never re-clamped (the BFA paper's model,
  arXiv 1903.12269).
- :class:`BinaryCodes` (``binary``, 1, unsigned): ``w = (2b - 1) * s``, ``s`` the
  per-channel magnitude, or per weight when magnitudes differ (0 for pruned weights,
  whose flips then change nothing).
- :class:`TernaryCodes` (``ternary``, 2, signed): TTQ (arXiv 1612.01064), see below.
- :class:`Float32Codes` / :class:`Float16Codes` (``float32`` / ``float16``): the
  IEEE-754 pattern of the value (float16: the value rounded to half precision).

Ternary (TTQ) storage: a **2-bit two's-complement code** ``c = -2 b_1 + b_0`` per weight
plus the two float scales ``(W_n, W_p)`` (not addressed, like every scale):

====  ====  =========
bits  code  value
====  ====  =========
01    +1    ``+W_p``
00     0    ``0``
11    -1    ``-W_n``
10    -2    ``-2 W_n``
====  ====  =========

TTQ never writes ``10``; only a fault does. Choice (stated, as the deployed hardware
would decode it): the code is an ordinary signed 2-bit integer multiplier whose product
takes the scale of its sign, ``w = c * W_p`` for ``c > 0`` and ``w = c * W_n`` for
``c < 0``, so ``10`` decodes to ``-2 W_n``: what an int2 multiply-accumulate datapath
with a sign-selected output scale computes without extra decode logic, the same rule
as for every k-bit integer (``-2^(k-1)`` used as stored), and the conservative reading
for robustness (clamping ``10`` to ``-W_n`` would hide a fault an integer datapath
shows). Single-bit flips: ``0`` -> ``+W_p`` (bit 0) or ``-2 W_n`` (bit 1); ``+W_p`` ->
``0`` or ``-W_n``; ``-W_n`` -> ``-2 W_n`` or ``+W_p``; ``-2 W_n`` -> ``-W_n`` or ``0``.
Both scales must be positive: codes are read back from the stored values by their sign.

``encode`` / ``decode`` take an optional ``index``: then the tensor holds only the
(flat) elements ``index`` of the layer's weight, and each gets its own step, so a
fault touches only the words it flips.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .base import Quantizer


class StoredCodes(Quantizer):
    """Base class: identity forward (the weight already holds the stored values).

    Args:
        shape: the weight's shape.
        bits: bits per stored word.
        scale: steps broadcastable to the weight (``(W_n, W_p)`` for ternary).
    """

    kind = ""
    signed = False
    _KINDS = ("int", "binary", "ternary", "float32", "float16")

    def __init__(self, shape: Sequence[int], bits: int, scale: Optional[Tensor] = None) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.bits = int(bits)
        self.register_buffer("scale", torch.ones(1) if scale is None else scale.detach().clone().float())

    def quantize(self, w: Tensor) -> Tensor:
        return w

    def forward(self, w: Tensor) -> Tensor:
        return w

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}"

    def _scale_at(self, like: Tensor, index: Optional[Tensor]) -> Tensor:
        s = self.scale
        if s.device != like.device:
            s = s.to(like.device)
        if index is None:
            return s
        key = (s.data_ptr(), s.device)
        if getattr(self, "_flat_key", None) != key:  # the per-element steps, built once
            self._flat_scale = s.reshape(1) if s.numel() == 1 else s.expand(self.shape).reshape(-1).contiguous()
            self._flat_key = key
        return self._flat_scale if s.numel() == 1 else self._flat_scale[index]

    # -- the codec ------------------------------------------------------------------------
    def encode(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:  # pragma: no cover - abstract
        """Stored words (int64 in ``[0, 2^bits)``, ``w``'s shape) of stored values ``w``."""
        raise NotImplementedError

    def decode(self, words: Tensor, index: Optional[Tensor] = None) -> Tensor:  # pragma: no cover - abstract
        """Stored values (float32, ``words``' shape) of stored words."""
        raise NotImplementedError

    def integers(self, w: Tensor) -> Tensor:
        """The signed integers (int64) behind stored values ``w`` (integer formats only)."""
        raise ValueError(f"{self.kind} storage holds no integers")

    def bit_steps(self, w: Tensor, index: Tensor) -> Tensor:
        """``(len(index), bits)`` float64: how much flat element ``index[r]`` of stored values
        ``w`` changes when its bit ``j`` goes from 0 to 1, the other bits as stored."""
        raise ValueError(f"{self.kind} storage has no fixed-point bit steps")

    def store(self, deployed: Tensor, name: str) -> Tensor:
        """The stored values of a layer's deployed weights (checked to round-trip).

        Raises:
            ValueError: deployed values this format cannot hold.
        """
        return self.decode(self.encode(deployed))


class IntCodes(StoredCodes):
    """k-bit two's-complement integers times a step (see the module docstring)."""

    kind, signed = "int", True

    @classmethod
    def of_step(cls, deployed: Tensor, bits: int, step: Optional[Tensor], name: str) -> "IntCodes":
        """Storage of ``deployed`` with its quantizer's ``step`` (None: max|W_c| / (2^(k-1) - 1))."""
        wd = deployed.detach().float()
        if step is None:
            step = torch.clamp(wd.abs().flatten(1).amax(1), min=1e-12) / (2 ** (bits - 1) - 1)
        return cls(wd.shape, bits, broadcast_scale(step, wd, name).abs())

    @classmethod
    def fit(cls, w: Tensor, bits: int, per_channel: bool) -> "IntCodes":
        """Per-layer (or per-channel) rounding to nearest, ``s = max|W| / (2^(k-1) - 1)``."""
        w = w.detach().float()
        mx = (w.abs().flatten(1).amax(1).reshape(-1, *([1] * (w.dim() - 1))) if per_channel
              else w.abs().max().reshape([1] * w.dim()))
        return cls(w.shape, bits, torch.clamp(mx, min=1e-12) / (2 ** (bits - 1) - 1))

    def round_float(self, w: Tensor) -> Tensor:
        """A float tensor's stored values: ``clamp(round(w / s), -qmax, qmax) * s``."""
        qmax = 2 ** (self.bits - 1) - 1
        s = self.scale.to(w.device)
        return torch.clamp(torch.round(w.detach().float() / s), -qmax, qmax) * s

    def integers(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return torch.round(w.detach() / self._scale_at(w, index)).long()

    def encode(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return self.integers(w, index) & ((1 << self.bits) - 1)

    def decode(self, words: Tensor, index: Optional[Tensor] = None) -> Tensor:
        half = 1 << (self.bits - 1)  # sign extension: (u + 2^(k-1)) mod 2^k - 2^(k-1)
        q = ((words.long() + half) & ((1 << self.bits) - 1)) - half
        return q.float() * self._scale_at(words, index)

    def bit_steps(self, w: Tensor, index: Tensor) -> Tensor:
        """``s * 2^j``, and ``-s * 2^(k-1)`` for the sign bit."""
        scale = self._scale_at(w, index).double().expand(index.shape)
        coef = 2.0 ** torch.arange(self.bits, dtype=torch.float64, device=scale.device)
        coef[-1] = -coef[-1]
        return scale[:, None] * coef[None, :]

    def store(self, deployed: Tensor, name: str) -> Tensor:
        wd = deployed.detach().float()
        s = self.scale.to(wd.device)
        ints = torch.round(wd / s)
        if float((wd - ints * s).abs().max()) > 1e-4 * float(s.max()) + 1e-12:
            raise ValueError(f"layer {name}: deployed weights are not integer multiples of one step per channel; "
                             "cannot read them as two's-complement integers")
        lo, hi = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        if float(ints.min()) < lo or float(ints.max()) > hi:
            raise ValueError(f"layer {name}: integers leave the {self.bits}-bit two's-complement range [{lo}, {hi}]")
        return ints * s


class BinaryCodes(StoredCodes):
    """One bit per weight, ``w = (2b - 1) * s``."""

    kind = "binary"

    @classmethod
    def of_values(cls, deployed: Tensor) -> "BinaryCodes":
        """Storage of deployed ``+-s`` values: per-channel magnitude, or per weight when
        magnitudes differ within a channel (zero, pruned weights get magnitude 0)."""
        wd = deployed.detach().float()
        mag = wd.abs().flatten(1).amax(1).reshape(-1, *([1] * (wd.dim() - 1)))
        return cls(wd.shape, 1, mag if torch.equal(wd.abs(), mag.expand_as(wd)) else wd.abs())

    def encode(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return (w > 0).long()

    def decode(self, words: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return (2.0 * words.float() - 1.0) * self._scale_at(words, index)

    def bit_steps(self, w: Tensor, index: Tensor) -> Tensor:
        """``2 s``."""
        return 2.0 * self._scale_at(w, index).double().expand(index.shape)[:, None]

    def store(self, deployed: Tensor, name: str) -> Tensor:
        return torch.where(deployed > 0, 1.0, -1.0) * self.scale.to(deployed.device)


def ternary_scale(w_n: Tensor, w_p: Tensor, name: str) -> Tensor:
    """The stored scale tensor ``(W_n, W_p)`` of a TTQ layer (float32).

    Raises:
        ValueError: a scale that is not a positive scalar.
    """
    if w_n.numel() != 1 or w_p.numel() != 1 or not (float(w_n.detach()) > 0 and float(w_p.detach()) > 0):
        raise ValueError(f"layer {name}: TTQ scales must be positive scalars to be stored as 2-bit codes, "
                         f"got W_n={w_n.detach().flatten().tolist()}, W_p={w_p.detach().flatten().tolist()}")
    return torch.stack([w_n.detach().reshape(()), w_p.detach().reshape(())]).float()


class TernaryCodes(StoredCodes):
    """TTQ's 2-bit two's-complement codes with scales ``(W_n, W_p)`` (module docstring)."""

    kind, signed = "ternary", True

    def _scales(self, like: Tensor):
        s = self.scale.to(device=like.device, dtype=torch.float32).reshape(-1)
        return s[0], s[1]

    def values(self, codes: Tensor) -> Tensor:
        """Values (float32) of signed codes in ``[-2, 1]``: ``c * W_p`` if ``c > 0`` else ``c * W_n``."""
        w_n, w_p = self._scales(codes)
        c = codes.to(torch.float32)
        return torch.where(codes > 0, c * w_p, c * w_n)

    def integers(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:
        w_n, w_p = self._scales(w)
        w = w.detach().to(torch.float32)
        return torch.round(torch.where(w > 0, w / w_p, w / w_n)).long()

    def encode(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return self.integers(w) & 3

    def decode(self, words: Tensor, index: Optional[Tensor] = None) -> Tensor:
        words = words.long()
        return self.values(torch.where(words >= 2, words - 4, words))

    def bit_steps(self, w: Tensor, index: Tensor) -> Tensor:
        """With ``c = -2 b_1 + b_0``: bit 0 adds ``W_p`` (0 -> +1) or ``W_n`` (-2 -> -1); bit 1
        adds ``-2 W_n`` (0 -> -2) or ``-W_n - W_p`` (+1 -> -1). Exact, not a linearization."""
        words = self.encode(w.reshape(-1)[index])
        w_n, w_p = (v.double() for v in self._scales(words))
        b0, b1 = (words & 1).bool(), ((words >> 1) & 1).bool()
        return torch.stack([torch.where(b1, w_n, w_p), torch.where(b0, -w_n - w_p, -2 * w_n)], dim=1)

    def store(self, deployed: Tensor, name: str) -> Tensor:
        values = self.decode(self.encode(deployed))
        if not torch.equal(values, deployed):
            raise ValueError(f"layer {name}: deployed TTQ weights are not the codes times W_p / W_n")
        return values


class Float32Codes(StoredCodes):
    """The IEEE-754 single-precision pattern (via an int32 view)."""

    kind = "float32"

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(shape, 32)

    def encode(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return w.detach().contiguous().view(torch.int32).long() & 0xFFFFFFFF

    def decode(self, words: Tensor, index: Optional[Tensor] = None) -> Tensor:
        words = words.long()
        return torch.where(words >= 2 ** 31, words - 2 ** 32, words).int().view(torch.float32)


class Float16Codes(StoredCodes):
    """The value rounded to IEEE half precision; the pattern is its int16 view."""

    kind = "float16"

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(shape, 16)

    def round_float(self, w: Tensor) -> Tensor:
        return w.detach().float().half().float()

    def encode(self, w: Tensor, index: Optional[Tensor] = None) -> Tensor:
        return w.detach().half().contiguous().view(torch.int16).long() & 0xFFFF

    def decode(self, words: Tensor, index: Optional[Tensor] = None) -> Tensor:
        words = words.long()
        return torch.where(words >= 2 ** 15, words - 2 ** 16, words).short().view(torch.float16).float()


def broadcast_scale(scale: Tensor, w: Tensor, name: str) -> Tensor:
    """A quantizer's step shaped to broadcast against weight ``w`` (tensor, channel or element)."""
    s = scale.detach().float().to(w.device)
    if s.numel() == 1:
        return s.reshape([1] * w.dim())
    if s.numel() == w.shape[0]:
        return s.reshape(-1, *([1] * (w.dim() - 1)))
    if s.shape == w.shape:
        return s
    raise ValueError(f"layer {name}: quantizer scale of shape {tuple(s.shape)} does not broadcast to "
                     f"weight {tuple(w.shape)}")
