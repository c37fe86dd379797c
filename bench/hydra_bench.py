"""HYDRA (arXiv 2002.10509) vs layer-wise magnitude pruning under PGD adversarial training on digits,
paired on seeds, at 90% and 99% sparsity with an equal adversarial-training budget.

Per seed s: a small_cnn (width ``--width``) is adversarially trained (PGD-AT, L-inf eps
``--eps``, ``--at-steps`` steps) ``--base-epochs`` epochs from seed s. For each sparsity:

- ``hydra``: ``prune.hydra`` (per-layer top-k scores trained ``--score-epochs`` under PGD-AT at
  lr 0.1, weights frozen), then ``--ft-epochs`` of PGD-AT fine-tuning (lr 0.005) with the mask;
- ``magnitude``: ``prune.layerwise_magnitude`` (the same per-layer sparsity), then
  ``--score-epochs + --ft-epochs`` epochs of PGD-AT fine-tuning (lr 0.005): the same number of
  adversarial epochs after the base.

Clean accuracy and robust accuracy (PGD, 20 steps, 1 restart, eps ``--eps``) on the 359 test
images. Reports mean +- std and paired per-seed differences.

Usage::

    python bench/hydra_bench.py --seeds 0 1 2 --out bench/results/hydra_digits.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from sturdynet.core.stats import mean_std
from sturdynet.attacks import create_attack
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import ADVERSARIAL, DATASETS, METHODS, MODELS
from sturdynet.data import load_data
from sturdynet.models import model_for_data
from sturdynet.train import TrainConfig, fit
from sturdynet.train.loop import evaluate_accuracy


def robust(model, data, eps: float) -> float:
    model.eval()
    x, y = data.test.x, data.test.y
    atk = create_attack("pgd", model, eps=eps, steps=20, random_start=True, seed=0, batch_size=512)
    adv = atk(x, y)
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def run_seed(seed: int, data, args) -> dict:
    adv = Component("pgd", from_dict(ADVERSARIAL.params("pgd"), {"eps": args.eps, "steps": args.at_steps}))
    torch.manual_seed(seed)
    base = model_for_data(Component("small_cnn", from_dict(MODELS.params("small_cnn"), {"width": args.width})), data)
    cfg = TrainConfig(epochs=args.base_epochs, lr=0.05, batch_size=64, adversarial=adv)
    fit(base, data, cfg, seed=seed)
    out = {"seed": seed, "base": {"clean": evaluate_accuracy(base, data.test)["accuracy"], "robust": robust(base, data, args.eps)}}
    ctx = training_context(data, cfg, seed=seed)
    for sp in args.sparsities:
        hp = from_dict(METHODS.params("prune.hydra"), {"sparsity": sp, "score_epochs": args.score_epochs, "score_lr": 0.1})
        h = METHODS.get("prune.hydra")().apply(base, hp, ctx)
        fit(h, data, dataclasses.replace(cfg, epochs=args.ft_epochs, lr=0.005), seed=seed)
        mp = from_dict(METHODS.params("prune.layerwise_magnitude"), {"sparsity": sp})
        m = METHODS.get("prune.layerwise_magnitude")().apply(base, mp, ctx)
        fit(m, data, dataclasses.replace(cfg, epochs=args.ft_epochs + args.score_epochs, lr=0.005), seed=seed)
        for name, model in (("hydra", h), ("magnitude", m)):
            out[f"{name}_{sp}"] = {"clean": evaluate_accuracy(model, data.test)["accuracy"],
                                   "robust": robust(model, data, args.eps)}
        print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--at-steps", type=int, default=3)
    ap.add_argument("--base-epochs", type=int, default=8)
    ap.add_argument("--score-epochs", type=int, default=3)
    ap.add_argument("--ft-epochs", type=int, default=2)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.99])
    ap.add_argument("--out", default="bench/logs/hydra_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(Component("digits", from_dict(DATASETS.params("digits"), {})), seed=0)
    t0 = time.perf_counter()
    rows = [run_seed(s, data, args) for s in args.seeds]
    res = {"args": vars(args), "machine": "2-core CPU shared by 8 engineers (loaded), 1 torch thread",
           "seconds": time.perf_counter() - t0, "rows": rows, "summary": {}}
    for k in rows[0]:
        if k == "seed":
            continue
        for metric in ("clean", "robust"):
            vals = [r[k][metric] for r in rows]
            res["summary"][f"{k}_{metric}"] = mean_std(vals)
    for sp in args.sparsities:
        for metric in ("clean", "robust"):
            res["summary"][f"paired_hydra_minus_magnitude_{sp}_{metric}"] = [
                r[f"hydra_{sp}"][metric] - r[f"magnitude_{sp}"][metric] for r in rows]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
