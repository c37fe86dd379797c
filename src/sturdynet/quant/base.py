"""Quantizer base class and the gradient modes that attacks switch between.

A quantizer is an ``nn.Module`` whose forward returns the *deployed* values (the
tensor the hardware would use, dequantized to float for PyTorch arithmetic). Its
backward is a named gradient estimator held in ``grad_mode``:

- ``"ste"``: the quantizer's straight-through estimator (identity inside the clipping
  range; subclasses may define another surrogate);
- ``"true"``: the true derivative of the deployed function, zero almost everywhere for
  rounding and sign.

:func:`sturdynet.nn.gradient_mode` switches every quantizer of a model at once; the
forward pass is the same in both modes.
"""
from __future__ import annotations

from torch import Tensor, nn

GRAD_MODES = ("ste", "true")


class Quantizer(nn.Module):
    """Base class. Subclasses implement :meth:`quantize` (deployed values) and may
    override :meth:`surrogate` (a differentiable function whose gradient is the
    estimator; the default is the identity, i.e. the plain STE)."""

    bits: int = 32

    def __init__(self) -> None:
        super().__init__()
        self.grad_mode = "ste"

    def quantize(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def surrogate(self, x: Tensor) -> Tensor:
        """The function whose gradient stands in for the quantizer's (identity = STE)."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        q = self.quantize(x)
        if self.grad_mode == "true":
            return q
        if self.grad_mode != "ste":
            raise ValueError(f"unknown gradient mode {self.grad_mode!r}; use one of {GRAD_MODES}")
        s = self.surrogate(x)
        return s + (q - s).detach()
