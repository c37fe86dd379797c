"""The ``ber`` check: accuracy against bit-error rate (see :mod:`sturdynet.faults.ber`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import nn

from ..core.params import rng
from ..core.registry import CHECKS
from ..faults.ber import BitErrors
from ..faults.bitview import BitView, ViewParams, deploy
from ..faults.common import accuracy, curve_point, trial_generator
from .base import CheckContext, SampleParams, eval_split

@dataclass(frozen=True)
class BERCheckParams(SampleParams, ViewParams):
    rates: Tuple[float, ...] = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    trials: int = rng(1, None, default=5)
    activations: bool = False
    samples: Optional[int] = rng(1, None, default=1000)


@CHECKS.register("ber", params=BERCheckParams)
def ber_check(model: nn.Module, data, params: BERCheckParams, ctx: CheckContext) -> dict:
    """Accuracy against bit-error rate; ``accuracy`` is the mean at the first rate and
    ``curve`` lists ``{ber, accuracy, std, trials, flips}`` (``flips``: mean weight-bit
    flips per trial). No ``per_sample``: the outcome is a distribution over trials."""
    if not params.rates or any(not 0.0 <= r <= 1.0 for r in params.rates):
        raise ValueError(f"rates must be a non-empty list of values in [0, 1], got {params.rates}")
    split = eval_split(data, params.samples)
    view_p = ViewParams(params.bits, params.float_layers, params.per_channel)
    base = deploy(model, view_p).to(ctx.device).eval()
    clean = accuracy(base, split, params.batch_size)
    view = BitView(base, params.float_layers)
    curve = []
    for j, r in enumerate(params.rates):
        fm = BitErrors(r, params.activations, params.bits, params.float_layers, params.per_channel)
        accs, flips = [], []
        for t in range(params.trials):
            with fm.applied(view, trial_generator(ctx.seed, 23, j, t)) as rec:  # in place, restored after
                accs.append(accuracy(base, split, params.batch_size))
            flips.append(rec["flips"])
        curve.append(curve_point("ber", r, accs, flips=sum(flips) / len(flips)))
    return {"kind": "fault", "accuracy": curve[0]["accuracy"], "samples": len(split), "clean_accuracy": clean,
            "ber": params.rates[0], "stored_bits": view.total_bits, "curve": curve}
