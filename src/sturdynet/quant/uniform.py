"""Uniform symmetric k-bit weight quantization, post-training, per output channel.

For each output channel c the step is ``s_c = max|W_c| / (2^(k-1) - 1)`` and the
deployed weight is ``s_c * clamp(round(W_c / s_c), -(2^(k-1) - 1), 2^(k-1) - 1)``
(symmetric, so zero stays exactly representable and the integer range is
sign-symmetric; see Krishnamoorthi, arXiv 1806.08342, section 2). The layer's
forward uses the quantized weights; its backward is the straight-through estimator
(clipped to the representable range) or, in ``grad_mode="true"``, zero.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..compress import CompressionMethod
from ..config import rng
from ..nn.quant_layers import convert
from ..registry import METHODS
from .base import Quantizer


class UniformWeightQuantizer(Quantizer):
    """Symmetric k-bit quantizer with a fixed (calibrated) per-channel step ``scale``."""

    def __init__(self, bits: int, channels: int, per_channel: bool = True) -> None:
        super().__init__()
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in [2, 16], got {bits}")
        self.bits = bits
        self.per_channel = per_channel
        self.register_buffer("scale", torch.ones(channels if per_channel else 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def _scale(self, w: Tensor) -> Tensor:
        return self.scale.view(-1, *([1] * (w.dim() - 1)))

    @torch.no_grad()
    def calibrate(self, w: Tensor) -> None:
        """Min-max calibration: the step maps the largest |w| to the largest integer."""
        m = w.detach().abs().flatten(1).amax(1) if self.per_channel else w.detach().abs().max().view(1)
        self.scale.copy_(torch.clamp(m, min=1e-12) / self.qmax)

    def integers(self, w: Tensor) -> Tensor:
        """The stored integers, in [-qmax, qmax]."""
        return torch.clamp(torch.round(w / self._scale(w)), -self.qmax, self.qmax)

    def quantize(self, w: Tensor) -> Tensor:
        return self.integers(w) * self._scale(w)

    def surrogate(self, w: Tensor) -> Tensor:
        s = self._scale(w)
        return torch.clamp(w, -self.qmax * s, self.qmax * s)


@dataclass(frozen=True)
class UniformParams:
    bits: int = rng(2, 8, default=8)
    per_channel: bool = True
    quantize_first: bool = False
    quantize_last: bool = False


@METHODS.register("quant.uniform", params=UniformParams)
class UniformQuant(CompressionMethod):
    """Post-training uniform k-bit weight quantization (first conv and last linear kept
    at full precision unless ``quantize_first`` / ``quantize_last``)."""

    def prepare(self, model: nn.Module, params: UniformParams) -> nn.Module:
        model = copy.deepcopy(model)

        def make(layer: nn.Module) -> Quantizer:
            return UniformWeightQuantizer(params.bits, layer.weight.shape[0], params.per_channel)

        return convert(model, make, skip_first=not params.quantize_first, skip_last=not params.quantize_last)

    def apply(self, model: nn.Module, params: UniformParams, ctx=None) -> nn.Module:
        model = self.prepare(model, params)
        for m in model.modules():
            q = getattr(m, "weight_quantizer", None)
            if isinstance(q, UniformWeightQuantizer):
                q.calibrate(m.weight)
        return model
