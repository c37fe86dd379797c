"""The ``quant.uniform`` compression method: k-bit weights (and optionally activations),
post-training (min-max or percentile calibration) or quantization-aware with LSQ.

- ``mode: ptq`` — :class:`~sturdynet.quant.uniform.UniformQuantizer` with a fixed step
  calibrated on the weights and, for activations, on a calibration batch of
  ``calib_samples`` training images (``ctx.data``). Fine-tuning afterwards
  (``finetune_epochs``) trains the weights through the clipped STE with fixed steps.
- ``mode: lsq`` — :class:`~sturdynet.quant.lsq.LSQQuantizer` (arXiv 1902.08153) with
  steps initialized as in the paper; the variant's ``finetune_epochs`` are the QAT
  epochs (the runner fine-tunes after ``apply``; the steps are parameters and train
  with the weights).

Activations are the inputs of the quantized layers (the first conv and last linear
stay float by default, so the network input and the logits are never quantized).
Signedness rule: an input is quantized as unsigned (``[0, 2^b - 1]``) when all its
calibration values are >= 0 (it follows a ReLU), signed otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import nn

from ..core.method import MethodContext, CompressionMethod
from ..core.params import rng
from .layers import QuantConv2d, QuantLinear, converted_copy
from ..core.registry import METHODS
from .calibrate import calibration_batch, collect_stats
from .lsq import LSQQuantizer
from .uniform import UniformQuantizer


@dataclass(frozen=True)
class UniformParams:
    """Parameters of ``quant.uniform``.

    Attributes:
        bits: weight bits (2..8).
        act_bits: activation bits (2..8); None keeps activations float.
        per_channel: one weight step per output channel (else one per layer).
        mode: ``ptq`` (calibrated steps) or ``lsq`` (learned steps, QAT).
        calibration: PTQ clipping: ``minmax`` or ``percentile``.
        percentile: the percentile used by ``calibration: percentile``.
        calib_samples: training images in the calibration batch (activations).
        quantize_first, quantize_last: also quantize the first conv / last linear.
    """

    bits: int = rng(2, 8, default=8)
    act_bits: Optional[int] = rng(2, 8, default=None)
    per_channel: bool = True
    mode: Literal["ptq", "lsq"] = "ptq"
    calibration: Literal["minmax", "percentile"] = "minmax"
    percentile: float = rng(50, 100, "(]", default=99.99)
    calib_samples: int = rng(1, None, default=256)
    quantize_first: bool = False
    quantize_last: bool = False


def quant_layers(model: nn.Module):
    """Every QuantConv2d / QuantLinear of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]


@METHODS.register("quant.uniform", params=UniformParams)
class UniformQuant(CompressionMethod):
    """Uniform k-bit quantization of conv/linear weights and optionally their inputs."""

    def prepare(self, model: nn.Module, params: UniformParams) -> nn.Module:
        lsq = params.mode == "lsq"

        def make_w(layer: nn.Module):
            c = layer.weight.shape[0]
            if lsq:
                return LSQQuantizer(params.bits, c, params.per_channel, signed=True)
            return UniformQuantizer(params.bits, c, params.per_channel, signed=True)

        def make_a(layer: nn.Module):
            if lsq:
                return LSQQuantizer(params.act_bits, activation=True)
            return UniformQuantizer(params.act_bits)

        return converted_copy(model, make_w, make_a if params.act_bits is not None else None,
                              quantize_first=params.quantize_first, quantize_last=params.quantize_last)

    def apply(self, model: nn.Module, params: UniformParams, ctx: Optional[MethodContext] = None) -> nn.Module:
        if params.act_bits is not None and (ctx is None or ctx.data is None):
            raise ValueError("quant.uniform with act_bits needs calibration data: pass ctx=MethodContext(data=...)")
        model = self.prepare(model, params)
        layers = quant_layers(model)
        for m in layers:
            q = m.weight_quantizer
            if isinstance(q, LSQQuantizer):
                q.init_step(m.weight)
            else:
                q.calibrate(m.weight, params.calibration, params.percentile)
        if params.act_bits is None or not layers:
            return model
        device = next(model.parameters()).device
        x = calibration_batch(ctx.data, params.calib_samples, device)
        stats = collect_stats(model, layers, x, "input", params.percentile, disable=layers)
        unsigned = 0
        for m in layers:
            st, q = stats[m], m.act_quantizer
            q.signed.fill_(st.signed)
            unsigned += int(not st.signed)
            if isinstance(q, LSQQuantizer):
                q.set_mean_abs(torch.tensor(st.mean_abs))
            else:
                clip = st.percentile if params.calibration == "percentile" else (st.abs_max if st.signed else st.max)
                q.set_clip(torch.tensor(clip))
        if ctx is not None:
            ctx.log["quant.uniform"] = {"layers": len(layers), "unsigned_act_layers": unsigned,
                                        "signed_act_layers": len(layers) - unsigned}
        return model
