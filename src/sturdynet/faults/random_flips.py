"""Uniformly random bit flips in the stored weights: the baseline for the Bit-Flip Attack.

The fault model picks ``flips`` distinct bits uniformly among all stored weight bits of
the bit view (:mod:`sturdynet.faults.bitview`) and flips them. The BFA paper
(arXiv 1903.12269) compares its chosen flips with exactly this baseline:
flipping 100 random bits of an 8-bit ResNet-18 costs under 1% accuracy.

The ``random_flips`` check reports the accuracy after each listed number of flips,
mean and standard deviation over seeded trials.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from ..config import rng
from ..evaluate.base import CheckContext, SampleParams, eval_split
from ..registry import CHECKS, FAULTS
from .bitview import BitView, ViewParams, deploy
from .common import accuracy, curve_point, sample_positions, trial_generator


@dataclass(frozen=True)
class RandomFlipsParams(ViewParams):
    flips: int = rng(0, None, default=10)


@FAULTS.register("random_flips", params=RandomFlipsParams)
class RandomFlips:
    """Flip ``flips`` distinct, uniformly chosen stored weight bits.

    ``inject(model, generator) -> (faulty deployed copy, record)``; the record lists the
    flipped (layer, weight index, bit) triples.
    """

    def __init__(self, flips: int = 10, bits: int = 8, float_layers: str = "int", per_channel: bool = False) -> None:
        if flips < 0:
            raise ValueError(f"flips must be >= 0, got {flips}")
        self.flips = int(flips)
        self.view = ViewParams(bits=bits, float_layers=float_layers, per_channel=per_channel)  # type: ignore[arg-type]

    def inject(self, model: nn.Module, generator: torch.Generator) -> Tuple[nn.Module, dict]:
        faulty = deploy(model, self.view)
        view = BitView(faulty, self.view.float_layers)
        pos = sample_positions(view.total_bits, self.flips, generator)
        where = []
        for i, elem, bit in view.locate(pos):
            view.flip(i, elem, bit)
            where += [(view.sites[i].name, int(e), int(b)) for e, b in zip(elem.tolist(), bit.tolist())]
        return faulty, {"fault": "random_flips", "flips": len(where), "bits": view.total_bits, "where": where}


@dataclass(frozen=True)
class RandomFlipsCheckParams(SampleParams, ViewParams):
    flips: Tuple[int, ...] = (1, 10, 100)
    trials: int = rng(1, None, default=5)
    samples: Optional[int] = rng(1, None, default=1000)


@CHECKS.register("random_flips", params=RandomFlipsCheckParams)
def random_flips_check(model: nn.Module, data, params: RandomFlipsCheckParams, ctx: CheckContext) -> dict:
    """Accuracy after N random bit flips (mean over ``trials``); ``accuracy`` is at the
    first N, ``curve`` lists ``{flips, accuracy, std, trials}`` with the clean deployed
    model at ``flips: 0``. No ``per_sample``: the outcome is a distribution over trials."""
    if not params.flips or any(n < 0 for n in params.flips):
        raise ValueError(f"flips must be a non-empty list of counts >= 0, got {params.flips}")
    split = eval_split(data, params.samples)
    view_p = ViewParams(params.bits, params.float_layers, params.per_channel)
    base = deploy(model, view_p).to(ctx.device).eval()
    clean = accuracy(base, split, params.batch_size)
    curve = [curve_point("flips", 0, [clean])]
    for j, n in enumerate(params.flips):
        fm = RandomFlips(n, params.bits, params.float_layers, params.per_channel)
        accs = []
        for t in range(params.trials):
            faulty, _ = fm.inject(base, trial_generator(ctx.seed, 11, j, t))
            accs.append(accuracy(faulty, split, params.batch_size))
        curve.append(curve_point("flips", n, accs))
    view = BitView(base, params.float_layers)
    return {"kind": "fault", "accuracy": curve[1]["accuracy"], "samples": len(split), "clean_accuracy": clean,
            "flips": params.flips[0], "stored_bits": view.total_bits, "curve": curve}
