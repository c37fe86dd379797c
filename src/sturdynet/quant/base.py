"""Quantizer base class, the gradient modes attacks switch between, and the export protocol.

A quantizer is an ``nn.Module`` whose forward returns the *deployed* values (the
tensor the hardware would use, dequantized to float for PyTorch arithmetic). Its
backward is a named gradient estimator held in ``grad_mode``:

- ``"ste"``: the quantizer's straight-through estimator (identity inside the clipping
  range; subclasses may define another surrogate or override :meth:`Quantizer.ste_forward`
  when their own parameters, e.g. LSQ's step, must receive gradients);
- ``"true"``: the true derivative of the deployed function, zero almost everywhere for
  rounding and sign (learned scales still get their true derivative).

:func:`sturdynet.quant.gradient_mode` switches every quantizer of a model at once; the
forward pass is the same in both modes.

Export protocol (used by :mod:`sturdynet.export` for bit-packed files). A quantizer
that stores ``bits`` bits per element implements

- ``encode(x) -> codes``: int64 codes in ``[0, 2**bits)`` of the deployed values, and
- ``decode(codes) -> latent``: a float tensor such that ``quantize(decode(encode(x)))``
  equals ``quantize(x)`` bit for bit, using only the quantizer's own parameters and
  buffers (which the export stores as float tensors; ``storage.compression_facts``
  counts them the same way). A quantizer whose scale is derived from the latent
  tensor (e.g. mean|w|) must keep that scale in a buffer so that decoding is exact.
- ``zero_code``: False when no code decodes to 0 (binary ``+-alpha``); a pruned tensor
  of such a quantizer is then always stored sparse (its mask cannot be rebuilt as
  ``tensor != 0``), in the export and in ``storage.compression_facts`` alike.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from .stored import StoredCodes

GRAD_MODES = ("ste", "true")


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` in forward, identity gradient in backward (the value is exact)."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: Tensor, g: float) -> Tensor:
    """Value ``x`` exactly, gradient multiplied by ``g`` (LSQ's gradient scale).

    Written as ``x.detach() + (x*g - (x*g).detach())`` so the forward value is
    bit-identical to ``x`` (``a - a == 0`` exactly), which keeps exported models bit-exact.
    """
    y = x * g
    return x.detach() + (y - y.detach())


class FakeQuantSTE(torch.autograd.Function):
    """``round(clamp(x / s, lo, hi)) * s`` with the straight-through backward of
    ``round_ste(clamp(x / s, lo, hi)) * s`` in one node (issue 18: about 1.7x cheaper than
    the composed graph): ``dx = g`` where ``lo <= x/s <= hi`` (clamp's inclusive range),
    else 0; ``ds = sum(g * (round(x/s) - x/s))`` inside and ``sum(g * bound)`` where
    clamped (LSQ's step gradient, arXiv 1902.08153 eq. 3), summed to ``s``'s shape. The
    forward value is bit-identical to the composed form; gradients agree to rounding."""

    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, lo: float, hi: float) -> Tensor:  # type: ignore[override]
        t = x / s
        q = torch.clamp(t, lo, hi).round_()
        ctx.save_for_backward(t, q)
        ctx.bounds, ctx.s_shape = (lo, hi), s.shape
        return q * s

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        t, q = ctx.saved_tensors
        lo, hi = ctx.bounds
        inside = (t >= lo) & (t <= hi)
        gx = torch.where(inside, g, 0.0) if ctx.needs_input_grad[0] else None
        gs = torch.where(inside, q - t, q).mul_(g).sum_to_size(ctx.s_shape) if ctx.needs_input_grad[1] else None
        return gx, gs, None, None


def fake_quant_ste(x: Tensor, s: Tensor, lo: float, hi: float) -> Tensor:
    """Deployed ``round(clamp(x / s, lo, hi)) * s``; straight-through gradients to ``x`` and
    ``s`` (``s`` broadcasts against ``x``; see :class:`FakeQuantSTE`)."""
    return FakeQuantSTE.apply(x, s, lo, hi)


class Quantizer(nn.Module):
    """Base class. Subclasses implement :meth:`quantize` (deployed values) and may
    override :meth:`surrogate` (a differentiable function whose gradient is the
    estimator; the default is the identity, i.e. the plain STE) or
    :meth:`ste_forward` (the whole straight-through forward, for quantizers with
    learned parameters)."""

    bits: int = 32
    zero_code: bool = True  # some code decodes to exactly 0 (see the export protocol)

    def __init__(self) -> None:
        super().__init__()
        self.grad_mode = "ste"

    def quantize(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def surrogate(self, x: Tensor) -> Tensor:
        """The function whose gradient stands in for the quantizer's (identity = STE)."""
        return x

    def ste_forward(self, x: Tensor) -> Tensor:
        """Deployed values in forward, the surrogate's gradient in backward."""
        s = self.surrogate(x)
        return s + (self.quantize(x) - s).detach()

    def forward(self, x: Tensor) -> Tensor:
        if self.grad_mode == "true":
            return self.quantize(x)
        if self.grad_mode != "ste":
            raise ValueError(f"unknown gradient mode {self.grad_mode!r}; use one of {GRAD_MODES}")
        return self.ste_forward(x)

    # -- stored codes (the fault bit view; sturdynet.quant.stored) --------------------------
    def stored(self, w: Tensor, deployed: Tensor, name: str = "weight") -> "StoredCodes":
        """The storage format (codec) of this quantizer's deployed tensor.

        Args:
            w: the latent tensor; deployed: its deployed values (``self(w)`` in eval mode).
            name: the layer, for error messages.

        The default reads ``bits == 1`` as binary ``+-s`` and wider quantizers as k-bit
        two's-complement integers with step max|W_c| / (2^(k-1) - 1); quantizers with
        their own step or codes override it.
        """
        from .stored import BinaryCodes, IntCodes

        if int(self.bits) == 1:
            return BinaryCodes.of_values(deployed)
        return IntCodes.of_step(deployed, int(self.bits), None, name)

    # -- export protocol ---------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Integer codes in ``[0, 2**bits)`` of the deployed values of ``x``."""
        raise NotImplementedError(f"{type(self).__name__} does not support packed export")

    def decode(self, codes: Tensor) -> Tensor:
        """A latent tensor whose deployed values are those that ``codes`` encode."""
        raise NotImplementedError(f"{type(self).__name__} does not support packed export")
