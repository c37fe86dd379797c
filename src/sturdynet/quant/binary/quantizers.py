"""Binary quantizers: XNOR-style weights ``sign(w) * alpha`` and sign activations.

Both are :class:`~sturdynet.quant.base.Quantizer` objects, so
:func:`sturdynet.quant.gradient_mode` switches them: in ``grad_mode="ste"`` the sign's
backward is the quantizer's named estimator (:mod:`.estimators`); in ``"true"`` it is
the true derivative of the deployed function, zero almost everywhere for ``sign``.

Weights (XNOR-Net, arXiv 1603.05279): ``alpha_c = mean |w_c|`` per output channel, kept
differentiable, so the weight gradient is ``alpha * estimator'(w) * g`` plus the exact
gradient through ``alpha``; in ``"true"`` mode only the (exact) ``alpha`` path remains.
The stored model holds 1 bit per weight (``bits = 1``) plus one float32 ``alpha`` per
output channel, kept in the ``alpha`` buffer (refreshed at every forward pass) so that
size accounting and export see it.

``alpha`` is computed in float64 as ``sum |w_c| / count_nonzero(w_c)`` and rounded once to
the weight dtype: for dense weights this is mean |w_c|; for pruned (masked) weights it
is the mean over the kept ones, and a tensor whose non-zeros all have magnitude ``a``
gets exactly ``a`` back, so packed export round trips bit for bit
(``quantize(decode(encode(w))) == quantize(w)``).
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import torch
from torch import Tensor, nn

from ..base import GRAD_MODES, Quantizer
from .estimators import check_estimator, sign_ste


class _SignQuantizer(Quantizer):
    """Shared estimator settings (name, ReSTE order ``o``, ``eps``, ``t``)."""

    bits = 1

    def __init__(self, estimator: str = "clipped_ste", o: float = 1.0, eps: float = 0.1, t: float = 1.5) -> None:
        super().__init__()
        self.estimator = check_estimator(estimator)
        self.o, self.eps, self.t = float(o), float(eps), float(t)

    def _sign(self, x: Tensor) -> Tensor:
        if self.grad_mode == "true":
            return torch.sign(x)  # zero gradient almost everywhere
        if self.grad_mode != "ste":
            raise ValueError(f"unknown gradient mode {self.grad_mode!r}; use one of {', '.join(GRAD_MODES)}")
        return sign_ste(x, self.estimator, self.o, self.eps, self.t)

    def extra_repr(self) -> str:
        o = f", o={self.o:g}" if self.estimator == "reste" else ""
        return f"estimator={self.estimator}{o}, grad_mode={self.grad_mode}"


class SignActivation(_SignQuantizer):
    """Binary activations: ``sign(x)`` (+-1; exact zeros, e.g. zero padding, stay 0)."""

    def quantize(self, x: Tensor) -> Tensor:
        return torch.sign(x)

    def forward(self, x: Tensor) -> Tensor:
        return self._sign(x)


class BinaryWeightQuantizer(_SignQuantizer):
    """Binary weights ``sign(w) * alpha`` with ``alpha`` = per-output-channel mean |w|.

    Args:
        channels: number of output channels (size of the ``alpha`` buffer).
        estimator: the sign estimator used in ``grad_mode="ste"``.
    """

    zero_code = False  # codes decode to +-alpha: pruned zeros live in the layer's mask

    def __init__(self, channels: int, estimator: str = "clipped_ste", o: float = 1.0, eps: float = 0.1,
                 t: float = 1.5) -> None:
        super().__init__(estimator, o, eps, t)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.register_buffer("alpha", torch.ones(channels))

    def scale(self, w: Tensor) -> Tensor:
        """Per-output-channel mean |w| over the non-zero weights, shaped to broadcast against ``w``."""
        if w.shape[0] != self.alpha.shape[0]:
            raise ValueError(f"weight has {w.shape[0]} output channels, quantizer expects {self.alpha.shape[0]}")
        flat = w.flatten(1)
        count = (flat != 0).sum(1).clamp(min=1)
        a = flat.abs().to(torch.float64).sum(1) / count
        return a.to(w.dtype).view(-1, *([1] * (w.dim() - 1)))

    def quantize(self, w: Tensor) -> Tensor:
        return torch.sign(w) * self.scale(w)

    def forward(self, w: Tensor) -> Tensor:
        a = self.scale(w)
        with torch.no_grad():
            self.alpha.copy_(a.detach().flatten())
        return self._sign(w) * a

    def stored(self, w: Tensor, deployed: Tensor, name: str = "weight"):
        """One bit per weight times the per-channel alpha (:class:`sturdynet.quant.stored.BinaryCodes`)."""
        from ..stored import BinaryCodes

        return BinaryCodes.of_values(deployed)

    # -- export protocol (sturdynet.quant.base) --------------------------------------------
    def encode(self, w: Tensor) -> Tensor:
        """1-bit codes: 1 for w >= 0, 0 for w < 0 (exact zeros are restored by the layer's mask)."""
        with torch.no_grad():
            self.alpha.copy_(self.scale(w).flatten())
        return (w >= 0).to(torch.int64)

    def decode(self, codes: Tensor) -> Tensor:
        """``(2 * code - 1) * alpha``: a latent tensor with the encoded signs and scales."""
        a = self.alpha.view(-1, *([1] * (codes.dim() - 1)))
        return (codes.to(a.dtype) * 2 - 1) * a


def binary_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, layer) of every layer whose weight quantizer is binary, in model order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "weight_quantizer", None), BinaryWeightQuantizer)]


def binary_weights(model: nn.Module) -> List[nn.Parameter]:
    """The latent (real-valued) weights behind every binary weight quantizer."""
    return [m.weight for _, m in binary_layers(model)]


def sign_quantizers(model: nn.Module) -> Iterator[_SignQuantizer]:
    """Every binary quantizer (weights and activations) of ``model``."""
    return (m for m in model.modules() if isinstance(m, _SignQuantizer))
