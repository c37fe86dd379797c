"""The ``bfa`` check: flips to random guess under the Bit-Flip Attack, over several attack batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional

import torch
from torch import nn

from ..core import progress
from ..core.params import rng
from ..data.base import Split
from .base import CheckContext, SampleParams, eval_split
from ..core.registry import CHECKS
from ..faults.bfa import BitFlipAttack
from ..faults.bitview import BitView, ViewParams, deploy, hamming_distance
from ..core.stats import mean_std
from ..faults.common import accuracy, trial_generator
from ..faults.random_flips import RandomFlips


@dataclass(frozen=True)
class BFACheckParams(SampleParams, ViewParams):
    trials: int = rng(1, None, default=5)
    attack_batch: int = rng(1, None, default=128)
    attack_split: Literal["val", "train"] = "val"
    k_top: int = rng(1, None, default=10)
    widen: bool = True
    balanced: bool = True
    search: Literal["exact", "fast"] = "exact"
    fast_top: int = rng(1, None, default=3)
    max_flips: int = rng(1, None, default=100)
    target_accuracy: Optional[float] = rng(0, 1, default=None)
    random_baseline: bool = True
    accuracy_at: int = rng(0, None, default=10)
    samples: Optional[int] = rng(1, None, default=1000)


def mean_curve(curves: List[List[dict]]) -> List[dict]:
    """Average accuracy-against-flips curves of several attacks.

    Each trial's accuracy at ``f`` flips is its last measured point with ``flips <= f``
    (an attack that stopped early keeps its final accuracy).
    """
    xs = sorted({p["flips"] for c in curves for p in c})
    out = []
    for f in xs:
        accs = [[p for p in c if p["flips"] <= f][-1]["accuracy"] for c in curves]
        ms = mean_std(accs, ddof=0)
        out.append({"flips": f, "accuracy": ms["mean"], "std": ms["std"], "trials": len(accs),
                    "trial_accuracy": [float(a) for a in accs]})
    return out


def _attack_split(data, which: str) -> Split:
    split = data.val if which == "val" else data.train
    if len(split) == 0:
        raise ValueError(f"bfa: the {which} split is empty; use attack_split: train")
    return split


@CHECKS.register("bfa", params=BFACheckParams)
def bfa_check(model: nn.Module, data, params: BFACheckParams, ctx: CheckContext) -> dict:
    """Run the BFA ``trials`` times, each from its own random attack batch (drawn from
    the validation split by default; held-out accuracy is measured on the test split).
    The attack stops on balanced accuracy by default (``balanced``); ``search: fast``
    ranks layers by the first-order loss change and measures only ``fast_top`` of them.

    Metrics: ``accuracy`` (mean held-out accuracy after ``accuracy_at`` chosen flips, also
    recorded as ``flips``, so variants compare at one attack budget), ``final_accuracy``
    (after the whole attacks), ``clean_accuracy``,
    ``flips_to_random`` ``{mean, std, reached, trials, censored}`` (an attack that never
    reached the target within ``max_flips`` counts as ``max_flips`` and sets
    ``censored``; ``by_accuracy`` / ``by_balanced_accuracy``: the same under either stop
    rule, counted as far as the attacks went), ``curve`` (mean accuracy against flips), ``seconds_per_flip``, per-trial
    details and, with ``random_baseline``, the accuracy after as many random flips.
    """
    held = eval_split(data, params.samples)
    source = _attack_split(data, params.attack_split)
    view = ViewParams(params.bits, params.float_layers, params.per_channel)
    atk = BitFlipAttack(params.k_top, params.max_flips, params.target_accuracy, view, params.batch_size,
                        params.widen, params.balanced, params.search, params.fast_top)
    base = deploy(model, view).to(ctx.device).eval()
    clean = accuracy(base, held, params.batch_size)
    target = params.target_accuracy if params.target_accuracy is not None else 1.0 / data.num_classes + 0.01
    trials, curves = [], []
    for t in range(params.trials):
        g = trial_generator(ctx.seed, 37, t)
        idx = torch.randperm(len(source), generator=g)[:params.attack_batch]
        with progress.part(t, params.trials):
            res = atk.run(base, source.x[idx], held, data.num_classes)
        curves.append(res.curve)
        trials.append({"flips_to_random": res.flips_to_random, "reached": res.reached, "flips": res.flips,
                       "stalled": res.stalled,
                       "final_accuracy": res.curve[-1]["accuracy"], "seconds": res.seconds,
                       "seconds_per_flip": res.seconds / max(1, res.flips),
                       "hamming": hamming_distance(base, res.model, view),
                       "layers": [h["layer"] for h in res.history], "curve": res.curve})
        if ctx.progress is not None:
            ctx.progress({"event": "bfa_trial", "trial": t + 1, "trials": params.trials, "flips": res.flips,
                          "flips_to_random": res.flips_to_random})
    values = [tr["flips_to_random"] if tr["flips_to_random"] is not None else params.max_flips for tr in trials]
    reached = sum(tr["flips_to_random"] is not None for tr in trials)
    ftr = {**mean_std(values, ddof=0), "reached": reached, "trials": len(trials), "censored": reached < len(trials),
           "stop": "balanced_accuracy" if params.balanced else "accuracy"}
    for k in ("accuracy", "balanced_accuracy"):  # both stop rules, as far as the attacks went
        got = [tr["reached"][k] for tr in trials]
        ftr[f"by_{k}"] = {**mean_std([g if g is not None else params.max_flips for g in got], ddof=0),
                          "reached": sum(g is not None for g in got)}
    at = [[p for p in c if p["flips"] <= params.accuracy_at][-1]["accuracy"] for c in curves]
    out = {"kind": "fault", "accuracy": mean_std(at)["mean"], "flips": params.accuracy_at,
           "final_accuracy": mean_std([tr["final_accuracy"] for tr in trials])["mean"], "samples": len(held),
           "clean_accuracy": clean, "target_accuracy": target, "flips_to_random": ftr,
           "curve": mean_curve(curves),
           "seconds_per_flip": sum(tr["seconds"] for tr in trials) / max(1, sum(tr["flips"] for tr in trials)),
           "trials": trials}
    if params.random_baseline:
        n = max(1, int(round(ftr["mean"])))
        fm = RandomFlips(n, params.bits, params.float_layers, params.per_channel)
        view_b = BitView(base, params.float_layers)
        accs = []
        for t in range(params.trials):
            with fm.applied(view_b, trial_generator(ctx.seed, 41, t)):
                accs.append(accuracy(base, held, params.batch_size))
        out["random_baseline"] = {"flips": n, **mean_std(accs, ddof=0)}
    return out
