"""Uniformly random bit flips in the stored weights: the baseline for the Bit-Flip Attack.

The fault model picks ``flips`` distinct bits uniformly among all stored weight bits of
the bit view (:mod:`sturdynet.faults.bitview`) and flips them. The BFA paper
(arXiv 1903.12269) compares its chosen flips with exactly this baseline:
flipping 100 random bits of an 8-bit ResNet-18 costs under 1% accuracy.

The ``random_flips`` check reports the accuracy after each listed number of flips,
mean and standard deviation over seeded trials.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Tuple

import torch
from torch import nn

from ..core.params import rng
from ..core.registry import FAULTS
from .bitview import BitView, ViewParams, deploy
from .common import sample_positions


@dataclass(frozen=True)
class RandomFlipsParams(ViewParams):
    flips: int = rng(0, None, default=10)


@FAULTS.register("random_flips", params=RandomFlipsParams)
class RandomFlips:
    """Flip ``flips`` distinct, uniformly chosen stored weight bits.

    ``inject(model, generator) -> (faulty deployed copy, record)``; the record lists the
    flipped (layer, weight index, bit) triples. ``with applied(view, generator) as record:``
    flips the same bits in the live deployed model of ``view`` and restores them exactly.
    """

    def __init__(self, flips: int = 10, bits: int = 8, float_layers: str = "int", per_channel: bool = False) -> None:
        if flips < 0:
            raise ValueError(f"flips must be >= 0, got {flips}")
        self.flips = int(flips)
        self.view = ViewParams(bits=bits, float_layers=float_layers, per_channel=per_channel)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def applied(self, view: BitView, generator: torch.Generator) -> Iterator[dict]:
        """Flips in place for the ``with`` block; every touched word is restored on exit."""
        pos = sample_positions(view.total_bits, self.flips, generator)
        with view.flipped(pos) as per_layer:
            yield {"fault": "random_flips", "flips": int(pos.numel()), "bits": view.total_bits,
                   "per_layer": per_layer}

    def inject(self, model: nn.Module, generator: torch.Generator) -> Tuple[nn.Module, dict]:
        faulty = deploy(model, self.view)
        view = BitView(faulty, self.view.float_layers)
        pos = sample_positions(view.total_bits, self.flips, generator)
        where = []
        for i, elem, bit in view.locate(pos):
            view.flip(i, elem, bit)
            where += [(view.sites[i].name, int(e), int(b)) for e, b in zip(elem.tolist(), bit.tolist())]
        return faulty, {"fault": "random_flips", "flips": len(where), "bits": view.total_bits, "where": where}
