"""Trained Ternary Quantization (TTQ; Zhu, Han, Mao, Dally, arXiv 1612.01064).

Each quantized layer keeps latent float weights ``w`` and two learned scales
``W_p, W_n > 0``. With the threshold ``delta = t * max|w|`` (the paper's per-layer
rule, t = 0.05 on CIFAR-10 and ImageNet), the deployed weight is

    w_t = +W_p  if w > delta;   0  if |w| <= delta;   -W_n  if w < -delta.

Backward (``grad_mode="ste"``), paper eqs. 7-8, with I_p, I_0, I_n the three regions
and ``g = dL/dw_t``:

- ``dL/dW_p = sum_{I_p} g``;
- ``dL/dW_n``: the paper writes ``sum_{I_n} g``, which is the derivative with respect
  to the *deployed* negative value ``-W_n``; we keep ``W_n`` as the positive magnitude
  the paper describes and use the exact chain rule, ``dL/dW_n = -sum_{I_n} g`` (the
  same update of the deployed value ``-W_n``);
- ``dL/dw = W_p * g`` on I_p, ``1 * g`` on I_0, ``W_n * g`` on I_n (the scaled
  straight-through gradient); ``delta`` is treated as a constant.

``grad_mode="true"``: zero gradient to ``w``; ``W_p``/``W_n`` get the sums above.

Initialization: as in the paper, each layer's latent weights are first normalized to
[-1, 1] by their largest magnitude (so ``delta = t`` at the start and weights and
scales are O(1), which keeps the scales' summed gradients in proportion). The paper
does not state the initial scales; we set ``W_p`` / ``W_n`` to the mean of ``|w|``
over I_p / I_n (the least-squares scale for that assignment, as in TWN). The layer's
output is thereby divided by its old max|w|; the batch norm that follows absorbs that
in training, and when calibration data is available (``ctx.data``) the running
batch-norm statistics are re-estimated on ``calib_samples`` training images so the
model is usable before fine-tuning. Storage: 2 bits per weight plus the two float32
scales.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..core.method import MethodContext, CompressionMethod
from ..core.params import rng
from .layers import converted_copy
from ..core.registry import METHODS
from .base import Quantizer
from .calibrate import calibration_batch, recalibrate_bn


class TTQQuantizer(Quantizer):
    """Ternary weights ``{-W_n, 0, +W_p}`` with learned scales.

    Args:
        threshold: ``t`` in ``delta = t * max|w|``, in (0, 1).
    """

    bits = 2

    def __init__(self, threshold: float = 0.05) -> None:
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        self.w_p = nn.Parameter(torch.ones(1))
        self.w_n = nn.Parameter(torch.ones(1))

    def regions(self, w: Tensor):
        """Boolean masks (I_p, I_n) of the latent tensor ``w``."""
        delta = self.threshold * w.detach().abs().max()
        wd = w.detach()
        return wd > delta, wd < -delta

    @torch.no_grad()
    def init_scales(self, w: Tensor) -> None:
        """``W_p`` / ``W_n`` = mean |w| over I_p / I_n (see the module docstring)."""
        pos, neg = self.regions(w)
        a = w.detach().abs()
        self.w_p.fill_(float(a[pos].mean()) if pos.any() else float(a.max().clamp(min=1e-8)))
        self.w_n.fill_(float(a[neg].mean()) if neg.any() else float(a.max().clamp(min=1e-8)))

    def quantize(self, w: Tensor) -> Tensor:
        pos, neg = self.regions(w)
        q = self.w_p * pos.to(w.dtype) - self.w_n * neg.to(w.dtype)
        # Keep ``w`` in the graph with a zero gradient (the true derivative), value unchanged.
        return q + (w - w.detach()) * 0

    def ste_forward(self, w: Tensor) -> Tensor:
        pos, neg = self.regions(w)
        q = self.quantize(w)
        # Latent gradient scaled by W_p / 1 / W_n; the added term is exactly zero in value.
        k = torch.where(pos, self.w_p.detach(), torch.where(neg, self.w_n.detach(), torch.ones_like(w)))
        wk = w * k
        return q + (wk - wk.detach())

    def ternary(self, w: Tensor) -> Tensor:
        """The ternary indices in {-1, 0, +1}."""
        pos, neg = self.regions(w)
        return pos.long() - neg.long()

    def stored(self, w: Tensor, deployed: Tensor, name: str = "weight"):
        """2-bit two's-complement codes with the scales ``(W_n, W_p)`` (:class:`.stored.TernaryCodes`)."""
        from .stored import TernaryCodes, ternary_scale

        return TernaryCodes(w.shape, 2, ternary_scale(self.w_n, self.w_p, name))

    def encode(self, w: Tensor) -> Tensor:
        return self.ternary(w) + 1

    def decode(self, codes: Tensor) -> Tensor:
        # Latent = the ternary index: max|w| = 1, delta = t < 1, so quantize() gives back
        # exactly +W_p / 0 / -W_n (all zeros stay zeros).
        return (codes.long() - 1).to(self.w_p.dtype)


@dataclass(frozen=True)
class TernaryParams:
    """Parameters of ``quant.ternary``.

    Attributes:
        threshold: ``t`` in ``delta = t * max|w|`` (paper: 0.05).
        quantize_first, quantize_last: also ternarize the first conv / last linear
            (the paper keeps them full precision).
    """

    threshold: float = rng(0, 1, "()", default=0.05)
    calib_samples: int = rng(0, None, default=512)
    quantize_first: bool = False
    quantize_last: bool = False


@METHODS.register("quant.ternary", params=TernaryParams)
class TernaryQuant(CompressionMethod):
    """TTQ; train it with the variant's ``finetune_epochs`` (scales and latent weights learn)."""

    def prepare(self, model: nn.Module, params: TernaryParams) -> nn.Module:
        return converted_copy(model, lambda layer: TTQQuantizer(params.threshold),
                              quantize_first=params.quantize_first, quantize_last=params.quantize_last)

    def apply(self, model: nn.Module, params: TernaryParams, ctx: Optional[MethodContext] = None) -> nn.Module:
        model = self.prepare(model, params)
        zeros, total = 0, 0
        for m in model.modules():
            q = getattr(m, "weight_quantizer", None)
            if isinstance(q, TTQQuantizer):
                with torch.no_grad():
                    m.weight.div_(m.weight.abs().max().clamp(min=1e-12))
                q.init_scales(m.weight)
                t = q.ternary(m.weight)
                zeros += int((t == 0).sum())
                total += t.numel()
        if ctx is not None and ctx.data is not None and params.calib_samples > 0:
            x = calibration_batch(ctx.data, params.calib_samples, next(model.parameters()).device)
            recalibrate_bn(model, x)
        if ctx is not None:
            ctx.log["quant.ternary"] = {"zero_fraction": zeros / max(1, total)}
        return model
