"""Fixed point with a trainable binary-point position (QFX; Dai et al., arXiv 2401.17544).

A ``b``-bit fixed-point number with ``f`` fractional bits is ``n * 2^-f`` with ``n`` an
integer in ``[-2^(b-1), 2^(b-1) - 1]`` (signed, two's complement) or ``[0, 2^b - 1]``
(unsigned). The total width ``b`` is fixed; the binary-point position is learned per
quantizer (per layer for weights, per tensor for activations, BN parameters and
residual outputs).

What we do exactly (the continuous relaxation):

- each quantizer holds a float parameter ``frac`` (the continuous binary point);
- forward uses ``f = round(frac)`` and ``q = clamp(round(x * 2^f), lo, hi) * 2^-f``
  (rounding half to even, saturation at the range ends, as HLS ``ap_fixed`` with
  ``AP_RND_CONV, AP_SAT``);
- backward (``grad_mode="ste"``): both roundings are straight-through, so
  ``dq/dx = 1`` inside the range and 0 where saturated, and with ``s = 2^-f``
  ``dq/dfrac = dq/ds * (-ln 2) * s`` where ``dq/ds = round(x/s) - x/s`` inside the
  range and the range end (``lo`` or ``hi``) where saturated;
- ``grad_mode="true"``: zero gradient to ``x``;
- initialization: the integer ``f`` minimizing the squared quantization error on the
  weights (or a calibration batch) among ``f0-2 .. f0+4``, ``f0`` being the largest
  ``f`` whose range covers the largest magnitude.

Element-wise layers (paper, section 3): with ``bn: true`` batch-norm ``gamma``/``beta``
are quantized to ``bits`` and the batch-norm outputs to ``act_bits`` (or ``bits``);
with ``residual: true`` the output of every residual block (a module with a
``shortcut`` or ``downsample`` child), i.e. the residual addition followed by its
ReLU, is quantized too (ReLU commutes with a quantizer that represents 0 exactly).
Not reproduced: the paper's multiplier-free K-hot encoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn

from ..core.method import MethodContext, CompressionMethod
from ..core.params import rng
from .quant_bn import QuantBatchNorm2d, quant_bn_copy
from .layers import QuantConv2d, QuantLinear, converted_copy
from ..core.registry import METHODS
from .base import Quantizer, fake_quant_ste
from .calibrate import best_power_of_two_frac, calibration_batch, collect_stats


class FixedPointQuantizer(Quantizer):
    """``b``-bit fixed point with a learned fractional-bit count ``frac``."""

    def __init__(self, bits: int, signed: bool = True) -> None:
        super().__init__()
        if not 2 <= bits <= 32:
            raise ValueError(f"bits must be in [2, 32], got {bits}")
        self.bits = bits
        self.frac = nn.Parameter(torch.zeros(1))
        self.register_buffer("signed", torch.tensor(bool(signed)))

    @property
    def lo(self) -> int:
        return -(2 ** (self.bits - 1)) if bool(self.signed) else 0

    @property
    def hi(self) -> int:
        return 2 ** (self.bits - 1) - 1 if bool(self.signed) else 2 ** self.bits - 1

    @property
    def frac_bits(self) -> int:
        """The deployed number of fractional bits."""
        return int(torch.round(self.frac.detach()).item())

    @torch.no_grad()
    def init_frac(self, x: Tensor) -> None:
        """Pick the integer ``f`` minimizing the squared error on ``x`` (see module doc)."""
        flat = x.detach().float().reshape(-1)
        if flat.numel() > 65536:
            flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:65536].to(flat.device)]
        self.set_frac(best_power_of_two_frac(flat.cpu(), self.bits, bool(self.signed), float(x.detach().abs().max())))

    @torch.no_grad()
    def set_frac(self, f: float) -> None:
        self.frac.fill_(float(f))

    @property
    def scale(self) -> Tensor:
        """The deployed step ``2^-f`` (read-only; for tools that read a quantizer's step)."""
        return self._step(torch.round(self.frac.detach()))

    def _step(self, f: Tensor) -> Tensor:
        return torch.exp2(-f)

    def integers(self, x: Tensor) -> Tensor:
        s = self._step(torch.round(self.frac.detach()))
        return torch.clamp(torch.round(x / s), self.lo, self.hi)

    def quantize(self, x: Tensor) -> Tensor:
        s = self._step(torch.round(self.frac))
        return torch.clamp(torch.round(x / s), self.lo, self.hi) * s

    def ste_forward(self, x: Tensor) -> Tensor:
        s = _Pow2Step.apply(self.frac)  # = exp2(-round_ste(frac)), one node
        return fake_quant_ste(x, s, self.lo, self.hi)  # = round_ste(clamp(x / s, lo, hi)) * s, fused

    def stored(self, w: Tensor, deployed: Tensor, name: str = "weight"):
        """k-bit two's-complement integers times this quantizer's step (:mod:`.stored`)."""
        from .stored import IntCodes

        return IntCodes.of_step(deployed, self.bits, self.scale, name)

    def encode(self, x: Tensor) -> Tensor:
        return (self.integers(x) - self.lo).long()

    def decode(self, codes: Tensor) -> Tensor:
        s = self._step(torch.round(self.frac.detach()))
        return (codes.to(self.frac.dtype) + self.lo) * s


class _Pow2Step(torch.autograd.Function):
    """``s = exp2(-round_ste(frac))`` as one node: ``ds/dfrac = -(s ln 2)`` (round is
    straight-through), evaluated in the order autograd evaluates the composed graph
    (``-((g * s) * ln 2)``), so the gradient bits are the same; it saves the per-quantizer
    round/sub/add/neg/exp2 nodes of the composed form."""

    @staticmethod
    def forward(ctx, frac: Tensor) -> Tensor:  # type: ignore[override]
        s = torch.exp2(-torch.round(frac))
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (s,) = ctx.saved_tensors
        return (g * s).mul_(math.log(2)).neg_()


def _quantize_output(module: nn.Module, inputs, output: Tensor) -> Tensor:
    """Forward hook: the module's output through its ``out_quantizer``."""
    q = getattr(module, "out_quantizer", None)
    return output if q is None else q(output)


def residual_blocks(model: nn.Module) -> List[nn.Module]:
    """Modules that end in a residual addition (they have a ``shortcut``/``downsample`` child)."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "shortcut", None), nn.Module) or isinstance(getattr(m, "downsample", None), nn.Module)]


@dataclass(frozen=True)
class FixedPointParams:
    """Parameters of ``quant.fixed_point``.

    Attributes:
        bits: total bits of weights (and of BN parameters).
        act_bits: total bits of layer inputs (None: float), BN and residual outputs
            (default there: ``bits``).
        bn: quantize batch-norm parameters and outputs.
        residual: quantize residual-block outputs.
        calib_samples: training images used to initialize activation binary points.
        quantize_first, quantize_last: also quantize the first conv / last linear.
    """

    bits: int = rng(2, 16, default=8)
    act_bits: Optional[int] = rng(2, 16, default=None)
    bn: bool = False
    residual: bool = False
    calib_samples: int = rng(1, None, default=256)
    quantize_first: bool = False
    quantize_last: bool = False


@METHODS.register("quant.fixed_point", params=FixedPointParams)
class FixedPointQuant(CompressionMethod):
    """Trainable fixed point; the binary points train during the variant's ``finetune_epochs``."""

    def prepare(self, model: nn.Module, params: FixedPointParams) -> nn.Module:
        ew_bits = params.act_bits or params.bits
        model = converted_copy(model, lambda layer: FixedPointQuantizer(params.bits),
                               (lambda layer: FixedPointQuantizer(params.act_bits)) if params.act_bits else None,
                               quantize_first=params.quantize_first, quantize_last=params.quantize_last)
        if params.bn:
            for name, m in list(model.named_modules()):
                if type(m) is nn.BatchNorm2d and m.affine:
                    parent_name, _, child = name.rpartition(".")
                    parent = model.get_submodule(parent_name) if parent_name else model
                    setattr(parent, child, quant_bn_copy(m, FixedPointQuantizer(params.bits),
                                                         FixedPointQuantizer(params.bits),
                                                         FixedPointQuantizer(ew_bits)))
        if params.residual:
            for blk in residual_blocks(model):
                blk.out_quantizer = FixedPointQuantizer(ew_bits).to(next(model.parameters()).device)
                blk.register_forward_hook(_quantize_output)
        return model

    def apply(self, model: nn.Module, params: FixedPointParams, ctx: Optional[MethodContext] = None) -> nn.Module:
        model = self.prepare(model, params)
        layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
        bns = [m for m in model.modules() if isinstance(m, QuantBatchNorm2d)]
        blocks = [m for m in model.modules() if isinstance(getattr(m, "out_quantizer", None), FixedPointQuantizer)
                  and not isinstance(m, QuantBatchNorm2d)]
        for m in layers:
            m.weight_quantizer.init_frac(m.weight)
        for m in bns:
            m.weight_quantizer.init_frac(m.weight)
            m.bias_quantizer.init_frac(m.bias)
        needs_data = (params.act_bits and layers) or bns or blocks
        if not needs_data:
            return model
        if ctx is None or ctx.data is None:
            raise ValueError("quant.fixed_point with activations, bn or residual needs calibration data: "
                             "pass ctx=MethodContext(data=...)")
        x = calibration_batch(ctx.data, params.calib_samples, next(model.parameters()).device)
        # Calibrate in network order: inputs first (un-quantized pass), then outputs.
        if params.act_bits and layers:
            st = collect_stats(model, layers, x, "input", 100.0, disable=layers + bns + blocks)
            for m in layers:
                self._init_act(m.act_quantizer, st[m])
        outs = bns + blocks
        if outs:
            st = collect_stats(model, outs, x, "output", 100.0, disable=layers + outs)
            for m in outs:
                self._init_act(m.out_quantizer, st[m])
        if ctx is not None:
            ctx.log["quant.fixed_point"] = {"layers": len(layers), "bn_layers": len(bns), "residual_blocks": len(blocks)}
        return model

    @staticmethod
    def _init_act(q: FixedPointQuantizer, st) -> None:
        q.signed.fill_(st.signed)
        q.set_frac(best_power_of_two_frac(st.sample, q.bits, st.signed, max(st.abs_max, 1e-12)))
