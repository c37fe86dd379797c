"""``BPDA(op, backward=...)``: declare a non-differentiable operation inside a model.

Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, arXiv 1802.00420,
section 4.1): a preprocessing step such as JPEG-style DCT quantization, bit-depth
reduction, thermometer encoding or k-winners-take-all has zero or useless gradients, so
gradient attacks through it report false robustness. Wrapping the step in ``BPDA``
keeps the forward pass exactly as it is and gives the step a gradient switch, like
sturdynet's quantizers (``grad_mode``, see :mod:`sturdynet.quant.grad_mode`):

- ``grad_mode = "true"``: the op's own autograd derivative (zero through rounding; no
  gradient at all through non-torch code);
- ``grad_mode = "ste"`` (the default): the forward value is ``op(x)`` and the backward
  pass is that of ``backward(x)``: ``"identity"`` (the paper's choice when ``op(x) ~ x``)
  or a differentiable approximation of ``op`` given as a callable.

Every attack that takes ``grad_mode`` (and the ``robust`` check, which runs both modes on
models with a switch) then has a straight-through mode on the op.

    from sturdynet.quant import BPDA
    model = nn.Sequential(BPDA(jpeg_like, backward="identity"), classifier)
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor, nn

Op = Callable[[Tensor], Tensor]


class _Straight(torch.autograd.Function):
    """Forward: the op's output, exactly; backward: the vector-Jacobian product of ``approx``."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor, approx) -> Tensor:  # type: ignore[override]
        ctx.approx = approx
        ctx.save_for_backward(x)
        return out.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if ctx.approx is None:
            return grad, None, None
        x, = ctx.saved_tensors
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            a = ctx.approx(xi)
            g, = torch.autograd.grad(a, xi, grad, allow_unused=True)
        return (torch.zeros_like(x) if g is None else g), None, None


class BPDA(nn.Module):
    """A non-differentiable ``op`` with a declared backward pass (see the module doc).

    Args:
        op: the deployed operation, a callable or an nn.Module (registered as a submodule).
        backward: ``"identity"`` or a differentiable callable approximating ``op``.
        grad_mode: ``"ste"`` (the declared backward) or ``"true"`` (the op's own gradient).
    """

    def __init__(self, op: Union[Op, nn.Module], backward: Union[str, Op] = "identity",
                 grad_mode: str = "ste") -> None:
        super().__init__()
        if not callable(op):
            raise ValueError(f"BPDA: op must be callable, got {type(op).__name__}")
        if isinstance(backward, str) and backward != "identity":
            raise ValueError(f"BPDA: backward must be 'identity' or a callable, got {backward!r}")
        if not isinstance(backward, str) and not callable(backward):
            raise ValueError(f"BPDA: backward must be 'identity' or a callable, got {type(backward).__name__}")
        if grad_mode not in ("ste", "true"):
            raise ValueError(f"BPDA: grad_mode must be 'ste' or 'true', got {grad_mode!r}")
        self.op = op
        self.backward_approx = None if backward == "identity" else backward
        self.grad_mode = grad_mode

    def forward(self, x: Tensor) -> Tensor:
        if self.grad_mode == "true" or not torch.is_grad_enabled() or not x.requires_grad:
            return self.op(x)
        with torch.no_grad():
            out = self.op(x)
        return _Straight.apply(x, out, self.backward_approx)

    def extra_repr(self) -> str:
        name = getattr(self.op, "__name__", type(self.op).__name__)
        back = "identity" if self.backward_approx is None else getattr(self.backward_approx, "__name__", "callable")
        return f"op={name}, backward={back}, grad_mode={self.grad_mode}"
