"""Piece-wise clustering (He et al., CVPR 2020) against the Bit-Flip Attack (arXiv 1903.12269) on
digits, paired on seeds: does clustering raise the number of flips BFA needs?

Per seed s: a small_cnn (width 16) trained 15 epochs (lr 0.05) from seed s; then

- ``clustered``: ``faults.clustering`` (``--strength``, ``--epochs`` at lr 0.01);
- ``control``: the same fine-tuning without the penalty (same seed, same batches).

Both are attacked by the ``bfa`` check (8-bit view, ``--trials`` trials, attack batch 64 from the
validation split, at most ``--max-flips``) with the same check seed, so trial t of both models
uses the same attack batch. Flips to random guess (11%: 10 classes) per trial; trials that
never reach it count as ``--max-flips`` (a lower bound; the count of such trials is recorded).
Reports per-seed means, mean +- std over all trials, the paired per-seed differences, the
median of the per-trial ratio clustered / control, and how many seeds favour clustering.

Usage::

    python bench/clustering_bfa_bench.py --seeds 0 1 2 3 4 --trials 4 --out bench/results/clustering_bfa_digits.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from sturdynet.checks.base import CheckContext
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import CHECKS, DATASETS, METHODS, MODELS
from sturdynet.data import load_data
from sturdynet.faults.common import accuracy
from sturdynet.models import model_for_data
from sturdynet.train import TrainConfig, fit


def flips(model, data, args, seed) -> dict:
    p = from_dict(CHECKS.params("bfa"), {"trials": args.trials, "attack_batch": 64, "max_flips": args.max_flips,
                                         "random_baseline": False, "samples": None})
    r = CHECKS.get("bfa")(model, data, p, CheckContext(seed=seed))
    per = [t.get("flips_to_random") for t in r["trials"]]
    return {"per_trial": [args.max_flips if f is None else f for f in per],
            "censored": sum(f is None for f in per), "clean": r.get("clean_accuracy")}


def run_seed(seed: int, data, args) -> dict:
    torch.manual_seed(seed)
    model = model_for_data(Component("small_cnn", from_dict(MODELS.params("small_cnn"), {"width": 16})), data)
    cfg = TrainConfig(epochs=15, lr=0.05, batch_size=64)
    fit(model, data, cfg, seed=seed)
    model.eval()
    ctx = training_context(data, cfg, seed=seed)
    cp = from_dict(METHODS.params("faults.clustering"), {"epochs": args.epochs, "strength": args.strength, "lr": 0.01})
    clustered = METHODS.get("faults.clustering")().apply(model, cp, ctx).eval()
    control = copy.deepcopy(model)
    fit(control, data, TrainConfig(epochs=args.epochs, lr=0.01, batch_size=64), seed=seed)
    control.eval()
    out = {"seed": seed, "accuracy": {"clustered": accuracy(clustered, data.test), "control": accuracy(control, data.test)}}
    out["clustered"] = flips(clustered, data, args, seed)
    out["control"] = flips(control, data, args, seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--strength", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-flips", type=int, default=300)
    ap.add_argument("--out", default="bench/logs/clustering_bfa_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(Component("digits", from_dict(DATASETS.params("digits"), {})), seed=0)
    t0 = time.perf_counter()
    rows = []
    for s in args.seeds:
        rows.append(run_seed(s, data, args))
        print(json.dumps(rows[-1]), flush=True)
    allc = [f for r in rows for f in r["clustered"]["per_trial"]]
    allk = [f for r in rows for f in r["control"]["per_trial"]]
    diffs = [statistics.mean(r["clustered"]["per_trial"]) - statistics.mean(r["control"]["per_trial"]) for r in rows]
    ratios = [c / k for r in rows for c, k in zip(r["clustered"]["per_trial"], r["control"]["per_trial"])]
    res = {"args": vars(args), "machine": "2-core CPU shared by 8 engineers (loaded), 1 torch thread",
           "seconds": time.perf_counter() - t0, "rows": rows,
           "clustered": {"mean": statistics.mean(allc), "std": statistics.stdev(allc), "median": statistics.median(allc)},
           "control": {"mean": statistics.mean(allk), "std": statistics.stdev(allk), "median": statistics.median(allk)},
           "paired_seed_diff": diffs, "seeds_favouring_clustering": sum(d > 0 for d in diffs),
           "median_trial_ratio": statistics.median(ratios),
           "trials_favouring_clustering": sum(r > 1 for r in ratios), "trials": len(ratios)}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
