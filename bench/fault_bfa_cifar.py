"""BFA, random flips, BER and fault defenses on a CIFAR-10 resnet20 (small CPU budget).

Usage (one CPU thread, in the background):
    OMP_NUM_THREADS=1 python bench/fault_bfa_cifar.py --out bench/logs/fault_bfa_cifar.json \
        > bench/logs/fault_bfa_cifar.log 2>&1 &

Budget: a stratified 10k-image CIFAR-10 training subset trained 6 epochs (or, with
``--base-ckpt``, a shared base checkpoint and its data split), the validation images
(the attack batches of 64 come from them), the first 256 test images (the attack stops on their balanced accuracy, mean
per-class recall, <= 11%: that subset is not class-balanced, and a model collapsed onto
one class keeps that class's share as plain accuracy) as the held-out set that decides
"random guess" (10% + 1%). Every model and stage is checkpointed next to ``--out`` so a
rerun resumes.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from sturdynet.core.method import MethodContext
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, component, from_dict
from sturdynet.data import load_data
from sturdynet.checks.base import CheckContext
from sturdynet.faults import deploy
from sturdynet.faults.common import accuracy
from sturdynet.models import model_for_data
from sturdynet.core.registry import CHECKS, DATASETS, METHODS, MODELS
from sturdynet.train import TrainConfig, fit
from sturdynet.run.checkpoint import load_checkpoint

from common import CIFAR, cifar_data  # noqa: E402  (bench/ is on sys.path when run as a script)


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/logs/fault_bfa_cifar.json")
    ap.add_argument("--data", default=CIFAR)
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--ft-epochs", type=int, default=2)
    ap.add_argument("--attack-batch", type=int, default=64)
    ap.add_argument("--base-ckpt", default=None, help="use this trained sturdynet checkpoint as the dense model")
    ap.add_argument("--dense-ckpt", default=None, help="dense checkpoint (default: next to --out)")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--held", type=int, default=256)
    ap.add_argument("--max-flips", type=int, default=100)
    ap.add_argument("--stages", default="dense,ber,binary,clustering,clipact")
    args = ap.parse_args()
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res["budget"] = {"train_subset": args.train, "epochs": args.epochs, "held_out": args.held,
                     "attack_batch": args.attack_batch, "trials": args.trials, "max_flips": args.max_flips, "threads": 1}

    def save() -> None:
        out.write_text(json.dumps(res, indent=1))

    cfg = TrainConfig(epochs=args.epochs, lr=0.1, batch_size=128, weight_decay=5e-4, warmup_epochs=1)
    if args.base_ckpt:  # a shared base model (sturdynet checkpoint): its data spec, seed 0
        while not Path(args.base_ckpt).exists():
            time.sleep(30)
        time.sleep(5)
        dense, blob = load_checkpoint(args.base_ckpt)
        data = load_data(component(DATASETS, blob["arch"]["data_spec"], "data"), seed=0)
        res["budget"].update(base_checkpoint=args.base_ckpt, base_budget=blob["extra"].get("budget"),
                             base_seconds=blob["extra"].get("seconds"))
        ckpt = None
    else:
        data, _ = cifar_data({"train": args.train, "test": args.held}, 0, args.data, val_fraction=0.02)
        mspec = Component("resnet20", from_dict(MODELS.params("resnet20"), {}) if MODELS.params("resnet20") else None)
        ckpt = Path(args.dense_ckpt) if args.dense_ckpt else out.with_suffix(".dense.pt")
        torch.manual_seed(0)
        dense = model_for_data(mspec, data)
    log("data", data.describe()["train"], data.describe()["val"], data.describe()["test"])
    if ckpt is None:
        pass
    elif ckpt.exists():
        dense.load_state_dict(torch.load(ckpt, weights_only=True))
    else:
        t0 = time.perf_counter()
        fit(dense, data, cfg, seed=0, progress=lambda e: log("epoch", e.get("epoch"), e.get("val_accuracy")))
        res["train_seconds"] = time.perf_counter() - t0
        torch.save(dense.state_dict(), ckpt)
    dense.eval()
    ctx_fit = training_context(data, cfg, seed=0)
    held = data.test.take(args.held)
    res["dense"] = {"float_accuracy": accuracy(dense, held), "int8_accuracy": accuracy(deploy(dense), held)}
    log("dense", res["dense"])
    save()
    cctx = CheckContext(seed=0, progress=lambda e: log(e))
    stages = args.stages.split(",")

    def bfa(model, key, trials, max_flips, **view):
        """One bfa check per trial (seed = trial), saved after each, so partial runs count."""
        p = from_dict(CHECKS.params("bfa"), {"trials": 1, "max_flips": max_flips, "samples": args.held,
                                             "attack_batch": args.attack_batch, "balanced": True, **view})
        runs = res.setdefault(key + "_runs", [])
        for t in range(len(runs), trials):
            t0 = time.perf_counter()
            m = CHECKS.get("bfa")(model, data, p, CheckContext(seed=t))
            tr = m["trials"][0]
            runs.append({"flips_to_random": tr["flips_to_random"], "flips": tr["flips"],
                         "final_accuracy": tr["final_accuracy"], "seconds_per_flip": tr["seconds_per_flip"],
                         "hamming": tr["hamming"], "clean_accuracy": m["clean_accuracy"],
                         "accuracy_at_10": m["accuracy"], "random_baseline": m.get("random_baseline"),
                         "curve": m["curve"], "wall_seconds": time.perf_counter() - t0})
            log(key, "trial", t, {k: v for k, v in runs[-1].items() if k != "curve"})
            save()
        vals = [r["flips_to_random"] if r["flips_to_random"] is not None else max_flips for r in runs]
        mean = sum(vals) / len(vals)
        res[key] = {"flips_to_random": {"mean": mean, "std": (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5,
                                        "reached": sum(r["flips_to_random"] is not None for r in runs),
                                        "trials": len(runs)},
                    "seconds_per_flip": sum(r["seconds_per_flip"] * r["flips"] for r in runs) / max(1, sum(r["flips"] for r in runs))}
        log(key, res[key])
        save()

    if "dense" in stages and "bfa_int8_balanced" not in res:
        bfa(dense, "bfa_int8_balanced", args.trials, args.max_flips)
    if "ber" in stages and "ber_int8" not in res:
        for fmt, rates in (("int", [1e-5, 1e-4, 1e-3, 1e-2]), ("float32", [1e-7, 1e-6, 1e-5, 1e-4])):
            p = from_dict(CHECKS.params("ber"), {"rates": rates, "trials": 3, "samples": args.held,
                                                 "float_layers": fmt})
            res[f"ber_{'int8' if fmt == 'int' else fmt}"] = CHECKS.get("ber")(dense, data, p, cctx)
            log("ber", fmt, [(c["ber"], round(c["accuracy"], 3)) for c in res[f"ber_{'int8' if fmt == 'int' else fmt}"]["curve"]])
        save()
    if "binary" in stages and "bfa_binary" not in res:
        bck = out.with_suffix(".binary.pt")
        bp = from_dict(METHODS.params("binarize"), {"activations": False, "epochs": 0})
        binary = METHODS.get("binarize")().prepare(dense, bp)
        if bck.exists():
            binary.load_state_dict(torch.load(bck, weights_only=True))
        else:
            bp = from_dict(METHODS.params("binarize"), {"activations": False, "epochs": args.ft_epochs, "lr": 0.01})
            binary = METHODS.get("binarize")().apply(dense, bp, copy.copy(ctx_fit))
            torch.save(binary.state_dict(), bck)
        binary.eval()
        res["binary"] = {"accuracy": accuracy(binary, held), "finetune_epochs": args.ft_epochs}
        log("binary", res["binary"])
        bfa(binary, "bfa_binary", 3, args.max_flips)
        bfa(binary, "bfa_binary_only", 3, args.max_flips, float_layers="skip")
    if "clustering" in stages and "bfa_clustering" not in res:
        cck = out.with_suffix(".clustering.pt")
        clustered = copy.deepcopy(dense)
        if cck.exists():
            clustered.load_state_dict(torch.load(cck, weights_only=True))
        else:
            cp = from_dict(METHODS.params("faults.clustering"), {"epochs": args.ft_epochs, "strength": 0.3, "lr": 0.01})
            clustered = METHODS.get("faults.clustering")().apply(dense, cp, copy.copy(ctx_fit))
            torch.save(clustered.state_dict(), cck)
        clustered.eval()
        res["clustering"] = {"float_accuracy": accuracy(clustered, held),
                             "int8_accuracy": accuracy(deploy(clustered), held), "finetune_epochs": args.ft_epochs,
                             "strength": 0.3}
        log("clustering", res["clustering"])
        bfa(clustered, "bfa_clustering", 3, args.max_flips)
    if "clipact" in stages and "ber_clipact_float32" not in res:
        cp = from_dict(METHODS.params("faults.clipact"), {"rates": [1e-6, 1e-5], "trials": 1, "iterations": 2,
                                                          "min_iterations": 1, "samples": 256})
        c = MethodContext(data=data, seed=0)
        t0 = time.perf_counter()
        clipped = METHODS.get("faults.clipact")().apply(dense, cp, c)
        res["clipact"] = {"search_seconds": time.perf_counter() - t0, "accuracy": accuracy(clipped, held),
                          "thresholds": c.log["clipact"]["thresholds"]}
        p = from_dict(CHECKS.params("ber"), {"rates": [1e-7, 1e-6, 1e-5, 1e-4], "trials": 3, "samples": args.held,
                                             "float_layers": "float32"})
        res["ber_clipact_float32"] = CHECKS.get("ber")(clipped, data, p, cctx)
        log("clipact", res["clipact"]["accuracy"],
            [(x["ber"], round(x["accuracy"], 3)) for x in res["ber_clipact_float32"]["curve"]])
        save()
    log("done")


if __name__ == "__main__":
    main()
