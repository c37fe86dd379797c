"""Bit-error-rate (BER) injection: every stored bit flips independently with probability r.

Weights: the bits of the bit view (:mod:`sturdynet.faults.bitview`: k-bit integers,
binary, float16 or float32 storage). The Bernoulli mask over all ``N`` stored bits is
drawn exactly and without a Python loop over bits: the number of flips is one draw of
Binomial(N, r) and the flipped positions are a uniform subset of that size, which is
the same distribution as N independent Bernoulli(r) bits (memory O(flips), not O(N)).

Activations (optional, ``activations=True``): a forward hook on every conv/linear layer
flips each bit of its float32 output with probability r, afresh at every forward call
(transient faults in the activation memory), with the same binomial-then-positions draw.

The ``ber`` check (:mod:`sturdynet.checks.ber`) reports accuracy-against-BER curves, mean and
standard deviation over Monte-Carlo trials.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Tuple

import torch
from torch import Tensor, nn

from ..core.params import rng
from ..core.registry import FAULTS
from .bitview import BitView, ViewParams, deploy, weight_layers
from .common import binomial_count, sample_positions


def flip_float32(t: Tensor, rate: float, generator: torch.Generator) -> Tuple[Tensor, int]:
    """A copy of float32 tensor ``t`` with each of its bits flipped with probability ``rate``."""
    if t.dtype != torch.float32:
        raise ValueError(f"flip_float32 needs a float32 tensor, got {t.dtype}")
    k = binomial_count(t.numel() * 32, rate, generator)
    if k == 0:
        return t, 0
    pos = sample_positions(t.numel() * 32, k, generator)
    mask = torch.zeros(t.numel(), dtype=torch.long)
    mask.index_add_(0, pos // 32, torch.ones_like(pos) << (pos % 32))
    mask = torch.where(mask >= 2 ** 31, mask - 2 ** 32, mask).int().to(t.device)
    out = (t.contiguous().view(torch.int32).reshape(-1) ^ mask).view(torch.float32).reshape(t.shape)
    return out, k


class _ActivationFaults:
    """Forward hook: transient float32 bit errors on a layer's output."""

    def __init__(self, rate: float, generator: torch.Generator) -> None:
        self.rate = rate
        self.generator = generator
        self.flips = 0

    def __call__(self, module: nn.Module, inputs, output: Tensor) -> Tensor:
        out, k = flip_float32(output.float(), self.rate, self.generator)
        self.flips += k
        return out.to(output.dtype)


@dataclass(frozen=True)
class BERParams(ViewParams):
    rate: float = rng(0, 1, default=1e-5)
    activations: bool = False


@FAULTS.register("ber", params=BERParams)
class BitErrors:
    """Flip every stored weight bit independently with probability ``rate`` (and, with
    ``activations``, every float32 activation bit of every conv/linear output).

    ``inject(model, generator) -> (faulty deployed copy, record)``;
    ``with applied(view, generator) as record:`` flips the same bits (the same draws) in the
    live deployed model of ``view`` and restores them exactly on exit, with no copy.
    """

    def __init__(self, rate: float = 1e-5, activations: bool = False, bits: int = 8,
                 float_layers: str = "int", per_channel: bool = False) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.rate = float(rate)
        self.activations = activations
        self.view = ViewParams(bits=bits, float_layers=float_layers, per_channel=per_channel)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def applied(self, view: BitView, generator: torch.Generator) -> Iterator[dict]:
        """Faults in place for the ``with`` block (see the class docstring)."""
        k = binomial_count(view.total_bits, self.rate, generator)
        pos = sample_positions(view.total_bits, k, generator)
        with view.flipped(pos) as per_layer:
            record = {"fault": "ber", "rate": self.rate, "flips": int(k), "bits": view.total_bits,
                      "per_layer": per_layer}
            handles = []
            try:
                if self.activations and self.rate > 0:
                    hook = _ActivationFaults(self.rate, generator)
                    handles = [m.register_forward_hook(hook) for _, m in weight_layers(view.model)]
                    record["activation_faults"] = hook
                yield record
            finally:
                for h in handles:
                    h.remove()

    def inject(self, model: nn.Module, generator: torch.Generator) -> Tuple[nn.Module, dict]:
        faulty = deploy(model, self.view)
        view = BitView(faulty, self.view.float_layers)
        k = binomial_count(view.total_bits, self.rate, generator)
        pos = sample_positions(view.total_bits, k, generator)
        per_layer = {}
        for i, elem, bit in view.locate(pos):
            view.flip(i, elem, bit)
            per_layer[view.sites[i].name] = int(elem.numel())
        record = {"fault": "ber", "rate": self.rate, "flips": int(k), "bits": view.total_bits, "per_layer": per_layer}
        if self.activations and self.rate > 0:
            hook = _ActivationFaults(self.rate, generator)
            for _, m in weight_layers(faulty):
                m.register_forward_hook(hook)
            record["activation_faults"] = hook  # .flips counts activation flips so far
        return faulty, record
