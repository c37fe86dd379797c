"""Adversarial training of binary networks on digits, paired on seeds: does PGD-AT during binary QAT buy
robust accuracy?

Per seed s: a small_cnn (width 16) trained 15 epochs (lr 0.05) from seed s; then ``binarize`` (binary
weights; ``--activations`` also binarizes activations) with ``--epochs`` of QAT at lr 0.01, either
standard or under PGD-AT (eps ``--eps``, 3 steps, through the straight-through estimators). Clean
and robust accuracy (PGD-20 through the straight-through estimators, the stronger gradient for a
binary model, and through the true gradients; the minimum is reported) on the 359 test images.

Usage::

    python bench/binary_at_bench.py --seeds 0 1 --out bench/results/binary_at_digits.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sturdynet.core.stats import mean_std
from sturdynet.attacks import create_attack
from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import ADVERSARIAL, DATASETS, METHODS, MODELS
from sturdynet.data import load_data
from sturdynet.models import model_for_data
from sturdynet.train import TrainConfig, fit
from sturdynet.train.context import training_context
from sturdynet.train.loop import evaluate_accuracy


def robust(model, data, eps: float) -> float:
    model.eval()
    x, y = data.test.x, data.test.y
    ok = torch.ones_like(y, dtype=torch.bool)
    for mode in ("ste", "true"):
        adv = create_attack("pgd", model, eps=eps, steps=20, random_start=True, seed=0, batch_size=512,
                            grad_mode=mode)(x, y)
        with torch.no_grad():
            ok &= model(adv).argmax(1) == y
    return float(ok.float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--activations", action="store_true")
    ap.add_argument("--out", default="bench/logs/binary_at_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(Component("digits", from_dict(DATASETS.params("digits"), {})), seed=0)
    t0 = time.perf_counter()
    rows = []
    adv = Component("pgd", from_dict(ADVERSARIAL.params("pgd"), {"eps": args.eps, "steps": 3}))
    for s in args.seeds:
        torch.manual_seed(s)
        base = model_for_data(Component("small_cnn", from_dict(MODELS.params("small_cnn"), {"width": 16})), data)
        cfg = TrainConfig(epochs=15, lr=0.05, batch_size=64)
        fit(base, data, cfg, seed=s)
        row = {"seed": s}
        bp = from_dict(METHODS.params("binarize"), {"activations": args.activations, "epochs": args.epochs, "lr": 0.01})
        for name, c in (("standard", cfg), ("pgd_at", TrainConfig(epochs=15, lr=0.05, batch_size=64, adversarial=adv))):
            m = METHODS.get("binarize")().apply(base, bp, training_context(data, c, seed=s)).eval()
            row[name] = {"clean": evaluate_accuracy(m, data.test)["accuracy"], "robust": robust(m, data, args.eps)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"args": vars(args), "machine": "2-core CPU shared by 8 engineers (loaded), 1 torch thread",
           "seconds": time.perf_counter() - t0, "rows": rows, "summary": {}}
    for name in ("standard", "pgd_at"):
        for metric in ("clean", "robust"):
            vals = [r[name][metric] for r in rows]
            res["summary"][f"{name}_{metric}"] = mean_std(vals)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
