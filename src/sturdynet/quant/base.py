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

import math
from typing import TYPE_CHECKING, Dict, Tuple

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


def outer_bounds(lo: float, hi: float, dtype: torch.dtype) -> Tuple[float, float]:
    """The neighbours in ``dtype`` just outside the integer bounds ``[lo, hi]``:
    ``hardtanh_backward`` passes the gradient where ``lo' < t < hi'`` (open), which for ``t``
    of that dtype is exactly ``lo <= t <= hi``. Cached per (bounds, dtype)."""
    key = (float(lo), float(hi), dtype)
    out = _OUTER.get(key)
    if out is None:
        b = torch.tensor(key[:2], dtype=dtype)
        out = (float(torch.nextafter(b[0], b[0] - 1)), float(torch.nextafter(b[1], b[1] + 1)))
        _OUTER[key] = out
    return out


_OUTER: Dict[Tuple[float, float, torch.dtype], Tuple[float, float]] = {}


def _as_scalar(s: Tensor, x: Tensor) -> Tensor:
    """A one-element ``s`` as a 0-dim tensor (ATen's fast path), where that keeps the result
    dtype: a 0-dim tensor does not promote ``x`` (bfloat16 ``x`` / float32 ``s`` of shape
    ``(1,)`` is float32, by a 0-dim ``s`` bfloat16), so only when the dtypes are equal."""
    return s.reshape(()) if s.numel() == 1 and s.dtype == x.dtype else s


def _sum_product(a: Tensor, b: Tensor, shape: torch.Size) -> Tensor:
    """``(a * b).sum_to_size(shape)``; for a per-tensor ``shape`` and two tensors of one dense
    layout, one dot product over their storage (no product tensor)."""
    if math.prod(shape) == 1 and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype:
        order = sorted(range(a.dim()), key=lambda d: -a.stride(d))
        try:
            return torch.dot(a.permute(order).view(-1), b.permute(order).view(-1)).reshape(shape)
        except RuntimeError:  # not dense (a view with gaps): the general form below
            pass
    return (a * b).sum_to_size(shape)


class FakeQuantSTE(torch.autograd.Function):
    """``round(clamp(x / s, lo, hi)) * s`` with the straight-through backward of
    ``round_ste(clamp(x / s, lo, hi)) * s`` in one node (issue 18 part 4):

    - ``dx = g`` where ``lo <= x/s <= hi`` (clamp's inclusive range), else 0;
    - ``ds = sum(g * r)`` with ``r = round(x/s) - x/s`` inside and ``r = bound`` where
      clamped (LSQ's step gradient, arXiv 1902.08153 eq. 3), summed to ``s``'s shape.

    The forward value is bit-identical to the composed form and to the first fused node;
    ``dx`` is bit-identical to it, ``ds`` agrees to float rounding (a per-tensor ``s`` sums
    ``g * r`` as one dot product). What makes it cheap on CPU: ``s`` is divided as a 0-dim
    tensor (a one-element tensor takes ATen's slow broadcast path), the range test is
    ``hardtanh_backward`` with the bounds' outer neighbours (one pass, no bool mask:
    the comparison kernels that write bool tensors are several times slower than float ones),
    ``r`` is built in the forward from that same kernel (``t`` inside, 0 outside) and saved
    instead of ``t`` and ``q``, and the output reuses ``q``'s buffer.

    Exact shortcut for inputs already on the grid: when ``round(clamp(x/s)) == x/s``
    everywhere (every ``x/s`` an integer in ``[lo, hi]``, e.g. the input of a fixed-point
    conv after a quantized batch-norm or residual output and a ReLU), the range test passes
    everywhere and ``r = 0``, so the backward is exactly ``dx = g``, ``ds = 0``; nothing is
    saved. ``torch.equal`` stops at the first mismatch, so off-grid inputs pay almost nothing
    for the test. CPU only: on an accelerator the test would make the host wait for the
    device at every quantizer.

    Not the same as ``torch.fake_quantize_per_tensor_affine`` (and its learnable variant):
    those multiply by ``1/s`` (other bits than ``x / s`` for a step that is not a power of
    two) and test the range on the *rounded* value, which passes gradient for ``x/s`` in
    ``(hi, hi + 0.5)`` and ``[lo - 0.5, lo)``; their CPU kernel also took 12 ms on a
    2M-element tensor where one pass of this node takes about 0.4 ms.

    A NaN ``x/s`` gets ``dx = g`` here (``hardtanh_backward`` compares false), 0 in the first
    fused node; the output is NaN in both."""

    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, lo: float, hi: float) -> Tensor:  # type: ignore[override]
        ctx.s_shape = s.shape
        s0 = _as_scalar(s, x)
        t = x / s0
        q = torch.clamp(t, lo, hi).round_()
        ctx.on_grid = t.device.type == "cpu" and torch.equal(q, t)  # every x/s an integer in [lo, hi]
        if ctx.on_grid:
            return q.mul_(s0)
        ctx.outer = outer = outer_bounds(lo, hi, t.dtype)
        r = None
        if ctx.needs_input_grad[1]:
            r = torch.ops.aten.hardtanh_backward(t, t, outer[0], outer[1])  # t inside, 0 where clamped
            r = torch.sub(q, r, out=r)  # round(t) - t inside, the bound where clamped
        ctx.save_for_backward(t if ctx.needs_input_grad[0] else None, r)
        return q.mul_(s0)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        if ctx.on_grid:
            gs = g.new_zeros(ctx.s_shape) if ctx.needs_input_grad[1] else None
            return (g if ctx.needs_input_grad[0] else None), gs, None, None
        t, r = ctx.saved_tensors
        gx = torch.ops.aten.hardtanh_backward(g, t, *ctx.outer) if ctx.needs_input_grad[0] else None
        gs = _sum_product(g, r, ctx.s_shape) if ctx.needs_input_grad[1] else None
        return gx, gs, None, None


def fake_quant_ste(x: Tensor, s: Tensor, lo: float, hi: float) -> Tensor:
    """Deployed ``round(clamp(x / s, lo, hi)) * s``; straight-through gradients to ``x`` and
    ``s`` (``s`` broadcasts against ``x``; see :class:`FakeQuantSTE`). Without autograd
    (``torch.no_grad``, or neither input requiring grad) only the forward's passes run."""
    if torch.is_grad_enabled() and (x.requires_grad or s.requires_grad):
        return FakeQuantSTE.apply(x, s, lo, hi)
    s0 = _as_scalar(s, x)
    return torch.clamp(x / s0, lo, hi).round_().mul_(s0)


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
