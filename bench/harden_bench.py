"""Hardening benchmark: CIFAR-10 resnet20 under standard and adversarial training.

Rows (one budget for all): standard training, PGD-AT, TRADES, fast FGSM-AT, PART;
HYDRA at 90% sparsity vs global magnitude pruning at 90%, both from the PGD-AT model and
both adversarially fine-tuned; a Bi-Real binary resnet20 with and without PGD-AT.
Columns: clean accuracy, robust accuracy at eps 8/255 (the ``robust`` ensemble when
present, else PGD; straight-through gradients where they apply), size in bytes
(``storage.compression_facts``), training seconds. Each row is appended to a JSON lines
file as it finishes; rows already there are skipped, so the script resumes.

    OMP_WAIT_POLICY=PASSIVE python bench/harden_bench.py --out bench/logs/harden.jsonl
    python bench/harden_bench.py --out bench/logs/harden.jsonl --table   # markdown table
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from sturdynet.core.method import run_steps
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.checks.base import CheckContext
from sturdynet.models.common import model_for_data
from sturdynet.core.registry import ADVERSARIAL, CHECKS, METHODS
from sturdynet.core.storage import compression_facts
from sturdynet.train import TrainConfig, evaluate_accuracy, fit

from common import CIFAR, cifar_data, log  # noqa: E402  (bench/ is on sys.path when run as a script)

EPS = 8 / 255


def adv(method: str, steps: int, **kw) -> Component:
    return Component(method, ADVERSARIAL.params(method)(eps=EPS, steps=steps, **kw))


def method(name: str, **kw) -> Component:
    return Component(name, METHODS.params(name)(**kw))


def robust_accuracy(model, data, samples: int, seed: int) -> dict:
    name = "robust" if "robust" in CHECKS else "pgd"
    params = from_dict(CHECKS.params(name), {"eps": EPS, "samples": samples}, name)
    m = CHECKS.get(name)(model, data, params, CheckContext(device=torch.device("cpu"), seed=seed))
    return {"check": name, "accuracy": m["accuracy"], "per_attack": m.get("per_attack"), "flags": m.get("flags")}


def rows(a):
    std = TrainConfig(epochs=a.epochs, batch_size=128, lr=0.1, warmup_epochs=1)
    at = lambda m, **kw: dataclasses.replace(std, adversarial=adv(m, a.at_steps, **kw))  # noqa: E731
    ft = dataclasses.replace(std, epochs=a.ft_epochs, lr=0.01, warmup_epochs=0.0,
                             adversarial=adv("pgd", a.at_steps))
    return [
        ("standard", "resnet20", std, None, None),
        ("PGD-AT", "resnet20", at("pgd"), None, None),
        ("TRADES", "resnet20", at("trades"), None, None),
        ("fast FGSM-AT", "resnet20", dataclasses.replace(std, adversarial=adv("fgsm_rs", 1)), None, None),
        ("PART", "resnet20", at("part"), None, None),
        ("HYDRA 90% (from PGD-AT)", "resnet20", None, ("PGD-AT", [method("prune.hydra", sparsity=0.9,
                                                                             score_epochs=a.ft_epochs)]), ft),
        ("magnitude 90% (from PGD-AT)", "resnet20", None, ("PGD-AT", [method("prune.global_magnitude",
                                                                                 sparsity=0.9)]), ft),
        ("binary (Bi-Real) standard", "bireal_resnet20", std, None, None),
        ("binary (Bi-Real) PGD-AT", "bireal_resnet20", at("pgd"), None, None),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=CIFAR)
    ap.add_argument("--out", default="bench/logs/harden.jsonl")
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--ft-epochs", type=int, default=2)
    ap.add_argument("--at-steps", type=int, default=3)
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated row names")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.exists():
        done = {r["row"]: r for r in (json.loads(line) for line in out.read_text().splitlines() if line.strip())}
    if a.table:
        print("| row | clean acc | robust acc (eps 8/255) | check | size (bytes) | train s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in done.values():
            print(f"| {r['row']} | {r['clean']:.3f} | {r['robust']['accuracy']:.3f} | {r['robust']['check']} | "
                  f"{r['size_bytes']:,} | {r['train_seconds']:.0f} |")
        return
    data, _ = cifar_data({"train": a.train_subset, "test": max(1000, a.eval_samples)}, a.seed, a.data,
                         val_fraction=0.02)
    models = {}
    only = set(a.only.split(",")) if a.only else None
    for name, arch, cfg, derived, ft_cfg in rows(a):
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        if derived is None:
            torch.manual_seed(a.seed)
            model = model_for_data(Component(arch, None), data)
            if name in done:  # reload it: derived rows start from it
                if Path(done[name].get("ckpt", "")).exists():
                    model.load_state_dict(torch.load(done[name]["ckpt"], weights_only=True))
                    models[name] = model.eval()
                continue
            fit(model, data, cfg, seed=a.seed)
        else:
            if name in done:
                continue
            parent, steps = derived
            if parent not in models:
                print(f"skip {name}: needs {parent}", flush=True)
                continue
            ctx = training_context(data, ft_cfg, seed=a.seed)
            model = run_steps(copy.deepcopy(models[parent]), steps, ctx)
            fit(model, data, ft_cfg, seed=a.seed)
        secs = time.perf_counter() - t0
        model.eval()
        models[name] = model
        ckpt = out.parent / f"harden_{len(done)}.pt"
        torch.save(model.state_dict(), ckpt)
        row = {"row": name, "clean": evaluate_accuracy(model, data.test)["accuracy"],
               "robust": robust_accuracy(model, data, a.eval_samples, a.seed),
               "size_bytes": compression_facts(model)["size_bytes"], "train_seconds": secs,
               "budget": {k: getattr(a, k) for k in ("train_subset", "epochs", "ft_epochs", "at_steps",
                                                       "eval_samples")},
               "threads": torch.get_num_threads(), "ckpt": str(ckpt)}
        done[name] = row
        log(out, row)


if __name__ == "__main__":
    main()
