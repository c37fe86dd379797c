"""The ``random_flips`` check: accuracy after N random stored-bit flips (see
:mod:`sturdynet.faults.random_flips`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import nn

from ..core.params import rng
from ..core.registry import CHECKS
from ..faults.bitview import BitView, ViewParams, deploy
from ..faults.common import accuracy, curve_point, trial_generator
from ..faults.random_flips import RandomFlips
from .base import CheckContext, SampleParams, eval_split

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
    view = BitView(base, params.float_layers)
    for j, n in enumerate(params.flips):
        fm = RandomFlips(n, params.bits, params.float_layers, params.per_channel)
        accs = []
        for t in range(params.trials):
            with fm.applied(view, trial_generator(ctx.seed, 11, j, t)):  # in place, restored after
                accs.append(accuracy(base, split, params.batch_size))
        curve.append(curve_point("flips", n, accs))
    return {"kind": "fault", "accuracy": curve[1]["accuracy"], "samples": len(split), "clean_accuracy": clean,
            "flips": params.flips[0], "stored_bits": view.total_bits, "curve": curve}
