"""HQ (arXiv 2212.12653) vs plain TTQ (arXiv 1612.01064) at an equal training budget, on digits.

Per seed: a small_cnn (width 16) is trained ``--base-epochs`` from that seed; then

- TTQ: ``quant.ternary`` + ``--hs-epochs + --epochs`` epochs of STE training (lr/10);
- HQ:  ``quant.hq`` with ``hs_epochs=--hs-epochs`` (regularizer + pruning to ``--sparsity``,
  lr/10), reinitialization, then ``--epochs`` epochs of STE training (lr/10).

Both see the same number of epochs after the base. Reported per seed: test accuracy, the mean
cosine distance between latent and deployed ternary weights (``ternary_cosine_distance``) and
the fraction of zero ternary weights; then mean +- std and the paired differences.

Usage::

    python bench/hq_bench.py --seeds 5 --out bench/results/hq_digits.json
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from sturdynet.core.stats import mean_std
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.core.storage import compression_facts
from sturdynet.data import load_data
from sturdynet.data.digits import DigitsParams
from sturdynet.models import model_for_data
from sturdynet.models.small_cnn import SmallCNNParams
from sturdynet.quant.hq import HQParams, HQQuant, ternary_cosine_distance
from sturdynet.quant.ternary import TernaryParams, TernaryQuant
from sturdynet.train import TrainConfig, fit
from sturdynet.train.loop import evaluate_accuracy


def zero_fraction(model) -> float:
    z = n = 0
    for m in model.modules():
        q = getattr(m, "weight_quantizer", None)
        if q is not None:
            t = q.ternary(m.weight)
            z += int((t == 0).sum())
            n += t.numel()
    return z / max(1, n)


def run_seed(seed: int, data, args) -> dict:
    torch.manual_seed(seed)
    base = model_for_data(Component("small_cnn", SmallCNNParams(width=args.width)), data)
    cfg = TrainConfig(epochs=args.base_epochs, lr=0.05, batch_size=64)
    fit(base, data, cfg, seed=seed)
    out = {"seed": seed, "float": evaluate_accuracy(base, data.test)["accuracy"]}
    ft = TrainConfig(epochs=args.hs_epochs + args.epochs, lr=0.005, batch_size=64)
    ctx = training_context(data, cfg, seed=seed)
    ttq = TernaryQuant().apply(copy.deepcopy(base), from_dict(TernaryParams, {}), ctx)
    d0 = ternary_cosine_distance(ttq)
    fit(ttq, data, ft, seed=seed)
    out["ttq"] = {"accuracy": evaluate_accuracy(ttq, data.test)["accuracy"], "cos_start": d0,
                  "cos_end": ternary_cosine_distance(ttq), "zeros": zero_fraction(ttq),
                  "size_bytes": compression_facts(ttq)["size_bytes"]}
    ctx = training_context(data, cfg, seed=seed)
    hp = from_dict(HQParams, {"sparsity": args.sparsity, "reg": args.reg, "hs_epochs": args.hs_epochs})
    hq = HQQuant().apply(copy.deepcopy(base), hp, ctx)
    log = ctx.log["quant.hq"]
    hist = [h.get("hq_cosine_distance") for h in log.get("history", [])]
    fit(hq, data, TrainConfig(epochs=args.epochs, lr=0.005, batch_size=64), seed=seed)
    out["hq"] = {"accuracy": evaluate_accuracy(hq, data.test)["accuracy"], "cos_start": log["cosine_distance_start"],
                 "cos_hs_epochs": hist,
                 "cos_before_reinit": log["cosine_distance_before_reinit"],
                 "cos_end": ternary_cosine_distance(hq), "zeros": zero_fraction(hq),
                 "size_bytes": compression_facts(hq)["size_bytes"]}
    return out


def summary(rows, key):
    vals = [r[key[0]][key[1]] for r in rows]
    return mean_std(vals)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--base-epochs", type=int, default=6)
    ap.add_argument("--hs-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--reg", type=float, default=1.0)
    ap.add_argument("--out", default="bench/logs/hq_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(Component("digits", DigitsParams()), seed=0)
    t0 = time.perf_counter()
    rows = []
    for s in range(args.seeds):
        rows.append(run_seed(s, data, args))
        print(json.dumps(rows[-1]), flush=True)
    res = {"args": vars(args), "machine": "2-core CPU shared by 8 engineers (loaded), 1 torch thread",
           "seconds": time.perf_counter() - t0, "rows": rows}
    for k in (("ttq", "accuracy"), ("hq", "accuracy"), ("ttq", "cos_end"), ("hq", "cos_end"), ("ttq", "zeros"), ("hq", "zeros"),
              ("ttq", "size_bytes"), ("hq", "size_bytes")):
        res[f"{k[0]}_{k[1]}"] = summary(rows, k)
    res["paired_acc_diff"] = [r["hq"]["accuracy"] - r["ttq"]["accuracy"] for r in rows]
    res["paired_cos_diff"] = [r["hq"]["cos_end"] - r["ttq"]["cos_end"] for r in rows]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
