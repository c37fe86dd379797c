"""Uniform k-bit quantization with a calibrated (fixed) step: post-training quantization.

Signed tensors (weights, and activations that can be negative) use the symmetric,
"narrow" integer range ``[-(2^(k-1) - 1), 2^(k-1) - 1]`` so zero is exact and the
range is sign-symmetric; unsigned tensors (post-ReLU activations) use
``[0, 2^k - 1]`` (Krishnamoorthi, arXiv 1806.08342, section 2). The deployed value is
``s * clamp(round(x / s), qmin, qmax)``. The step ``s`` is calibrated from a clipping
value ``m``: ``s = m / qmax``, with ``m`` the largest magnitude (``minmax``) or a
percentile of the magnitudes (``percentile``, which clips outliers), per output
channel for weights when ``per_channel``.

Backward: ``ste`` is the clipped straight-through estimator (gradient 1 inside
``[qmin*s, qmax*s]``, 0 outside); ``true`` is the derivative of the deployed function
(zero almost everywhere).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .base import Quantizer


def clip_value(x: Tensor, per_channel: bool, signed: bool, method: str = "minmax",
               percentile: float = 99.99) -> Tensor:
    """The clipping value ``m`` (per channel along dim 0, or a 1-element tensor).

    Args:
        x: the tensor to calibrate on (weights, or a batch of activations).
        per_channel: one value per index of dim 0 (weights' output channels).
        signed: calibrate on ``|x|`` (True) or on ``x`` clamped at 0 (False).
        method: ``"minmax"`` (largest value) or ``"percentile"``.
        percentile: in (0, 100], used by ``"percentile"``.
    """
    if method not in ("minmax", "percentile"):
        raise ValueError(f"unknown calibration {method!r}; use minmax or percentile")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    v = x.detach().abs() if signed else x.detach().clamp(min=0)
    v = v.flatten(1) if per_channel else v.reshape(1, -1)
    if method == "minmax" or percentile == 100:
        return v.amax(1)
    k = max(1, min(v.shape[1], int(round(percentile / 100 * v.shape[1]))))
    return v.float().kthvalue(k, dim=1).values.to(x.dtype)


class UniformQuantizer(Quantizer):
    """Uniform k-bit quantizer with a fixed per-tensor or per-channel step ``scale``.

    Args:
        bits: 2 to 16.
        channels: number of steps when ``per_channel`` (size of dim 0).
        per_channel: one step per index of dim 0 (weights) instead of one per tensor.
        signed: integer range ``[-(2^(k-1)-1), 2^(k-1)-1]`` if True, ``[0, 2^k-1]`` if
            False; kept in a buffer so a checkpoint restores it.
    """

    def __init__(self, bits: int, channels: int = 1, per_channel: bool = False, signed: bool = True) -> None:
        super().__init__()
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in [2, 16], got {bits}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.bits = bits
        self.per_channel = per_channel
        self.register_buffer("scale", torch.ones(channels if per_channel else 1))
        self.register_buffer("signed", torch.tensor(bool(signed)))

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if bool(self.signed) else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if bool(self.signed) else 2 ** self.bits - 1

    def _scale(self, x: Tensor) -> Tensor:
        return self.scale.view(-1, *([1] * (x.dim() - 1)))

    def _range(self) -> Tuple[Tensor, Tensor]:
        """``(qmin, qmax)`` as 0-dim tensors chosen by the ``signed`` buffer without a Python
        branch on its value, so the forward pass traces and exports (``torch.export``, ONNX);
        :attr:`qmin` / :attr:`qmax` are the same bounds as Python ints."""
        half, full = float(2 ** (self.bits - 1) - 1), float(2 ** self.bits - 1)
        dtype = self.scale.dtype
        lo = torch.where(self.signed, torch.tensor(-half, dtype=dtype), torch.tensor(0.0, dtype=dtype))
        hi = torch.where(self.signed, torch.tensor(half, dtype=dtype), torch.tensor(full, dtype=dtype))
        return lo.to(self.scale.device), hi.to(self.scale.device)

    @torch.no_grad()
    def calibrate(self, x: Tensor, method: str = "minmax", percentile: float = 99.99) -> None:
        """Set the step from ``x`` so the clipping value maps to ``qmax``."""
        m = clip_value(x, self.per_channel, bool(self.signed), method, percentile)
        self.set_clip(m)

    @torch.no_grad()
    def set_clip(self, m: Tensor) -> None:
        """Set the step from a clipping value ``m`` (scalar or per channel)."""
        m = torch.as_tensor(m, dtype=self.scale.dtype, device=self.scale.device).reshape(-1)
        if m.numel() not in (1, self.scale.numel()):
            raise ValueError(f"clip value has {m.numel()} entries, quantizer has {self.scale.numel()} steps")
        self.scale.copy_((torch.clamp(m, min=1e-8) / self.qmax).expand_as(self.scale))

    def integers(self, x: Tensor) -> Tensor:
        """The stored integers, in ``[qmin, qmax]``."""
        lo, hi = self._range()
        return torch.clamp(torch.round(x / self._scale(x)), lo, hi)

    def quantize(self, x: Tensor) -> Tensor:
        return self.integers(x) * self._scale(x)

    def surrogate(self, x: Tensor) -> Tensor:
        s = self._scale(x)
        lo, hi = self._range()
        return torch.clamp(x, lo * s, hi * s)

    def stored(self, w: Tensor, deployed: Tensor, name: str = "weight"):
        """k-bit two's-complement integers times this quantizer's step (:mod:`.stored`)."""
        from .stored import IntCodes

        return IntCodes.of_step(deployed, self.bits, self.scale, name)

    def encode(self, x: Tensor) -> Tensor:
        return (self.integers(x) - self._range()[0]).long()

    def decode(self, codes: Tensor) -> Tensor:
        return (codes.to(self.scale.dtype) + self._range()[0]) * self._scale(codes)


# Back-compatible name used by the foundation code (a signed weight quantizer).
UniformWeightQuantizer = UniformQuantizer
