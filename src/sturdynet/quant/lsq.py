"""Learned Step Size Quantization (LSQ; Esser et al., arXiv 1902.08153).

The deployed value is ``v_hat = s * round(clamp(v / s, -Q_N, Q_P))`` with a learned
step ``s`` (an ``nn.Parameter``, so the training loop's optimizer trains it).
Signed tensors use ``Q_N = 2^(b-1)``, ``Q_P = 2^(b-1) - 1``; unsigned ones (post-ReLU
activations) ``Q_N = 0``, ``Q_P = 2^b - 1``.

Gradients (``grad_mode="ste"``), as in the paper (eq. 3 and section 2.2):

- w.r.t. ``v``: 1 inside ``-Q_N < v/s < Q_P``, 0 outside (round is straight-through,
  the clip passes no gradient);
- w.r.t. ``s``: ``-v/s + round(v/s)`` inside, ``-Q_N`` below, ``Q_P`` above, multiplied
  by the gradient scale ``g = 1 / sqrt(N * Q_P)``, where ``N`` is the number of weights
  of the layer (per channel: of the output channel) or, for activations, the number of
  features per sample (elements of one input).

At exactly ``v/s = -Q_N`` or ``Q_P`` the inside formulas apply (clamp's inclusive range:
gradient 1 to ``v``, 0 to ``s``), where the paper's strict inequalities would clip; a
difference on a set of measure zero for float inputs. Both gradients come from one fused
node (:class:`~sturdynet.quant.base.FakeQuantSTE`).

Initial step (paper, section 2.1): ``s = 2 * mean(|v|) / sqrt(Q_P)``, over the layer's
weights (per channel when ``per_channel``) or over the first (calibration) batch of
activations. ``grad_mode="true"`` gives the deployed function's own derivative: zero
with respect to ``v``, ``round(v/s)`` (or the clip bound) with respect to ``s``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Quantizer, fake_quant_ste, grad_scale


class LSQQuantizer(Quantizer):
    """LSQ quantizer for weights (``activation=False``) or a layer's input.

    Args:
        bits: 2 to 16.
        channels: size of dim 0 when ``per_channel``.
        per_channel: one step per output channel (weights only).
        signed: integer range ``[-2^(b-1), 2^(b-1)-1]`` (True) or ``[0, 2^b-1]``; stored
            in a buffer.
        activation: quantizes activations (``N`` = features per sample) instead of weights.
    """

    def __init__(self, bits: int, channels: int = 1, per_channel: bool = False, signed: bool = True,
                 activation: bool = False) -> None:
        super().__init__()
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in [2, 16], got {bits}")
        if per_channel and activation:
            raise ValueError("per-channel steps are for weights; activations use one step per tensor")
        self.bits = bits
        self.per_channel = per_channel
        self.activation = activation
        self.step = nn.Parameter(torch.ones(channels if per_channel else 1))
        self.register_buffer("signed", torch.tensor(bool(signed)))

    @property
    def qn(self) -> int:
        return 2 ** (self.bits - 1) if bool(self.signed) else 0

    @property
    def qp(self) -> int:
        return 2 ** (self.bits - 1) - 1 if bool(self.signed) else 2 ** self.bits - 1

    def grad_scale_factor(self, x: Tensor) -> float:
        """``g = 1 / sqrt(N * Q_P)`` for a tensor shaped like ``x``."""
        if self.activation:
            n = x[0].numel() if x.dim() > 1 else x.numel()
        else:
            n = x[0].numel() if self.per_channel else x.numel()
        return 1.0 / math.sqrt(max(1, n) * self.qp)

    @torch.no_grad()
    def init_step(self, x: Tensor) -> None:
        """The paper's initialization ``2 * mean|x| / sqrt(Q_P)`` (per channel if set)."""
        a = x.detach().abs()
        m = a.flatten(1).mean(1) if self.per_channel else a.mean().reshape(1)
        self.set_mean_abs(m)

    @torch.no_grad()
    def set_mean_abs(self, mean_abs: Tensor) -> None:
        """Initialize from a precomputed ``mean|x|`` (scalar or per channel)."""
        m = torch.as_tensor(mean_abs, dtype=self.step.dtype, device=self.step.device).reshape(-1)
        s = torch.clamp(2 * m / math.sqrt(self.qp), min=1e-8)
        self.step.copy_(s.expand_as(self.step))

    def _view(self, s: Tensor, x: Tensor) -> Tensor:
        return s.view(-1, *([1] * (x.dim() - 1))) if self.per_channel else s

    def quantize(self, x: Tensor) -> Tensor:
        s = self._view(self.step, x)
        return torch.clamp(torch.round(x / s), -self.qn, self.qp) * s

    def ste_forward(self, x: Tensor) -> Tensor:
        s = self._view(grad_scale(self.step, self.grad_scale_factor(x)), x)
        return fake_quant_ste(x, s, -self.qn, self.qp)  # = round_ste(clamp(x / s, -Q_N, Q_P)) * s, fused

    def stored(self, w: Tensor, deployed: Tensor, name: str = "weight"):
        """k-bit two's-complement integers times this quantizer's step (:mod:`.stored`)."""
        from .stored import IntCodes

        return IntCodes.of_step(deployed, self.bits, self.step, name)

    def encode(self, x: Tensor) -> Tensor:
        s = self._view(self.step.detach(), x)
        return (torch.clamp(torch.round(x / s), -self.qn, self.qp) + self.qn).long()

    def decode(self, codes: Tensor) -> Tensor:
        s = self._view(self.step.detach(), codes)
        return (codes.to(s.dtype) - self.qn) * s
