"""PART (arXiv 2312.14235) vs PGD-AT on digits, paired on seeds: clean and robust accuracy together.

Per seed s: a small_cnn (width 16) trained ``--epochs`` from seed s (lr 0.05) with PGD-AT or with
PART (same eps ``--eps``, ``--steps`` attack steps; PART's defaults otherwise: eps_low = 7/8 eps on
the pixels Grad-CAM marks unimportant). Clean and PGD-20 (eps ``--eps``) accuracy on the 359 test
images; mean +- std and paired differences.

Usage::

    python bench/part_bench.py --seeds 0 1 2 --out bench/results/part_digits.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sturdynet.core.stats import mean_std
from sturdynet.attacks import create_attack
from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import ADVERSARIAL, DATASETS, MODELS
from sturdynet.data import load_data
from sturdynet.models import model_for_data
from sturdynet.train import TrainConfig, fit
from sturdynet.train.loop import evaluate_accuracy


def robust(model, data, eps: float) -> float:
    model.eval()
    x, y = data.test.x, data.test.y
    adv = create_attack("pgd", model, eps=eps, steps=20, random_start=True, seed=0, batch_size=512)(x, y)
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="bench/logs/part_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(Component("digits", from_dict(DATASETS.params("digits"), {})), seed=0)
    t0 = time.perf_counter()
    rows = []
    for s in args.seeds:
        row = {"seed": s}
        for name in ("pgd", "part"):
            adv = Component(name, from_dict(ADVERSARIAL.params(name), {"eps": args.eps, "steps": args.steps}))
            torch.manual_seed(s)
            m = model_for_data(Component("small_cnn", from_dict(MODELS.params("small_cnn"), {"width": 16})), data)
            fit(m, data, TrainConfig(epochs=args.epochs, lr=0.05, batch_size=64, adversarial=adv), seed=s)
            row[name] = {"clean": evaluate_accuracy(m, data.test)["accuracy"], "robust": robust(m, data, args.eps)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"args": vars(args), "machine": "2-core CPU shared by 8 engineers (loaded), 1 torch thread",
           "seconds": time.perf_counter() - t0, "rows": rows, "summary": {}}
    for name in ("pgd", "part"):
        for metric in ("clean", "robust"):
            vals = [r[name][metric] for r in rows]
            res["summary"][f"{name}_{metric}"] = mean_std(vals)
    for metric in ("clean", "robust"):
        res["summary"][f"paired_part_minus_pgd_{metric}"] = [r["part"][metric] - r["pgd"][metric] for r in rows]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
