"""RA-BNN Early-Growth (Rakin et al., arXiv 2103.13813) against the Bit-Flip Attack on digits, paired
on seeds, against binary baselines of the base size and of the grown size.

Per seed s: a ``binary_vgg_small`` (width ``--width``: channels w, w, 2w, 2w, 4w, 4w) is trained
``--base-epochs`` from seed s; then, each with ``--grow-epochs + --retrain-epochs`` further epochs:

- ``base``: the base BNN trained further at the same lr (original size);
- ``ra_bnn``: ``ra_bnn.grow`` (``--grow-epochs`` of Gumbel-Sigmoid growth, then retraining);
- ``equal``: a BNN built at RA-BNN's grown widths (``ra_bnn.grow`` with ``widths`` = the grown
  ones: base channels inherited, new ones fresh, no growth stage) trained the same number of
  epochs -- the binary baseline of equal size.

BFA (``bfa`` check, ``--trials`` trials, attack batch 64, at most ``--max-flips``, float first /
last layers stored 8-bit and attackable, as RA-BNN's evaluation) with the same check seed for all
three, so trial t uses the same attack batch. Flips to random guess (trials that never reach it
count as ``--max-flips``; counted as censored).

Usage::

    python bench/ra_bnn_bfa_bench.py --seeds 0 1 2 3 4 --out bench/results/ra_bnn_bfa_digits.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from sturdynet.core.stats import mean_std
from sturdynet.checks.base import CheckContext
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import CHECKS, DATASETS, METHODS, MODELS
from sturdynet.data import load_data
from sturdynet.faults.common import accuracy
from sturdynet.models import model_for_data
from sturdynet.quant.binary.binarize import binary_callbacks
from sturdynet.train import TrainConfig, fit


def flips(model, data, args, seed) -> dict:
    p = from_dict(CHECKS.params("bfa"), {"trials": args.trials, "attack_batch": 64, "max_flips": args.max_flips,
                                         "random_baseline": False, "samples": args.samples})
    r = CHECKS.get("bfa")(model, data, p, CheckContext(seed=seed))
    per = [t.get("flips_to_random") for t in r["trials"]]
    return {"per_trial": [args.max_flips if f is None else f for f in per], "censored": sum(f is None for f in per)}


def params_of(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run_seed(seed: int, data, args) -> dict:
    torch.manual_seed(seed)
    spec = Component("binary_vgg_small", from_dict(MODELS.params("binary_vgg_small"), {"width": args.width}))
    base = model_for_data(spec, data)
    cfg = TrainConfig(epochs=args.base_epochs, lr=args.lr, batch_size=64)
    cbs = lambda: binary_callbacks("approx_sign", None, False)  # noqa: E731
    fit(base, data, cfg, seed=seed, callbacks=cbs())
    extra = args.grow_epochs + args.retrain_epochs

    def ctx():
        return training_context(data, cfg, seed=seed)

    c = ctx()
    rp = from_dict(METHODS.params("ra_bnn.grow"), {"grow_epochs": args.grow_epochs, "retrain_epochs": args.retrain_epochs})
    ra = METHODS.get("ra_bnn.grow")().apply(base, rp, c).eval()
    widths = c.log["ra_bnn"]["grown_widths"]
    ep = from_dict(METHODS.params("ra_bnn.grow"), {"widths": widths, "retrain_epochs": extra})
    equal = METHODS.get("ra_bnn.grow")().apply(base, ep, ctx()).eval()
    more = copy.deepcopy(base)
    fit(more, data, TrainConfig(epochs=extra, lr=args.lr, batch_size=64, warmup_epochs=0.0), seed=seed, callbacks=cbs())
    more.eval()
    out = {"seed": seed, "base_widths": list(base.widths), "grown_widths": widths}
    for name, m in (("base", more), ("ra_bnn", ra), ("equal", equal)):
        out[name] = {"accuracy": accuracy(m, data.test), "params": params_of(m), **flips(m, data, args, seed)}
    return out


def stats(vals):
    return {**mean_std(vals), "median": statistics.median(vals)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--base-epochs", type=int, default=10)
    ap.add_argument("--grow-epochs", type=int, default=2)
    ap.add_argument("--retrain-epochs", type=int, default=6)
    ap.add_argument("--max-flips", type=int, default=300)
    ap.add_argument("--samples", type=int, default=None, help="held-out test images per BFA evaluation (default all)")
    ap.add_argument("--out", default="bench/logs/ra_bnn_bfa_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(Component("digits", from_dict(DATASETS.params("digits"), {})), seed=0)
    t0 = time.perf_counter()
    rows = []
    for s in args.seeds:
        rows.append(run_seed(s, data, args))
        print(json.dumps(rows[-1]), flush=True)
    res = {"args": vars(args), "machine": "2-core CPU shared by 8 engineers (loaded), 1 torch thread",
           "seconds": time.perf_counter() - t0, "rows": rows}
    for k in ("base", "ra_bnn", "equal"):
        res[k] = {"flips": stats([f for r in rows for f in r[k]["per_trial"]]),
                  "accuracy": stats([r[k]["accuracy"] for r in rows]),
                  "params": stats([r[k]["params"] for r in rows])}
    for a, b in (("ra_bnn", "base"), ("ra_bnn", "equal")):
        d = [statistics.mean(r[a]["per_trial"]) - statistics.mean(r[b]["per_trial"]) for r in rows]
        res[f"paired_{a}_minus_{b}"] = {"per_seed": d, "seeds_favouring": sum(x > 0 for x in d), **stats(d)}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
