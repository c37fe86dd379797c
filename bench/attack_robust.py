"""The ``robust`` ensemble on float, int8 and binary variants, with and without STE.

Each variant is attacked by APGD-CE and APGD-T with true gradients and with the
straight-through estimator, plus Square, every attack on every clean-correct point
(``cascade: false``), so each column is that attack's own robust accuracy and the
"worst" columns are per-sample worst cases: over the true-gradient attacks alone (what a
gradient-only evaluation reports), and over everything.

    # digits: the default recipe's data, model and training, plus int8 and binary variants
    OMP_NUM_THREADS=1 python bench/attack_robust.py --setup digits --out bench/logs/attack_robust_digits.json
    # CIFAR-10 resnet20 from the shared base checkpoint (see bench/quant_bench.py --stage base)
    OMP_NUM_THREADS=1 python bench/attack_robust.py --setup cifar --out bench/logs/attack_robust_cifar.json
    python bench/attack_robust.py --table bench/logs/attack_robust_digits.json
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from sturdynet.core.method import run_steps
from sturdynet.train.context import training_context
from sturdynet.core.params import component, from_dict
from sturdynet.checks import CheckContext
from sturdynet.run.recipe import load_recipe, parse_recipe
from sturdynet.core.registry import CHECKS, METHODS
from sturdynet.train.config import TrainConfig
from sturdynet.train.loop import evaluate_accuracy
from common import cifar_data  # noqa: E402  (bench/ is on sys.path when run as a script)

INT8 = {"method": "quant.uniform", "bits": 8, "act_bits": 8, "mode": "ptq"}


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def robust_params(args) -> dict:
    return {"eps": args.eps, "steps": args.steps, "n_target_classes": args.targets, "n_queries": args.queries,
            "samples": args.samples, "cascade": False, "batch_size": args.batch}


def digits(args) -> dict:
    base = load_recipe().to_dict()
    recipe = {**base, "name": "attack-robust-digits",
              "variants": [{"name": "float"}, {"name": "int8 (w8a8 PTQ)", **INT8},
                           {"name": "binary (QAT)", "method": "binarize", "epochs": args.binary_epochs}],
              "evaluate": [{"check": "clean"}, {"check": "robust", **robust_params(args)}]}
    from sturdynet.run.runner import run_recipe

    t0 = time.perf_counter()
    res = run_recipe(parse_recipe(recipe), tempfile.mkdtemp(), progress=None)
    rows = {}
    for v in res["variants"]:
        if v["status"] != "ok":
            rows[v["name"]] = {"error": v.get("error")}
            continue
        m = v["metrics"]["robust"]
        m.pop("per_sample", None)
        rows[v["name"]] = {"clean": v["metrics"]["clean"]["accuracy"], "robust": m}
    return {"setup": "digits", "budget": {"recipe": "built-in default (small_cnn width 16, 15 epochs)",
                                           "binary_epochs": args.binary_epochs, **robust_params(args)},
            "seconds": time.perf_counter() - t0, "rows": rows}


def cifar(args) -> dict:
    from sturdynet.run.checkpoint import load_checkpoint

    data, _ = cifar_data({"train": args.train, "val": 500, "test": 2000})
    base, _ = load_checkpoint(args.ckpt)
    base.eval()
    ft = from_dict(TrainConfig, {"epochs": args.binary_epochs, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4})
    ctx = training_context(data, ft, seed=0)
    variants = [("float", []), ("int8 (w8a8 PTQ)", [INT8]),
                ("binary (QAT)", [{"method": "binarize", "epochs": args.binary_epochs}])]
    params = from_dict(CHECKS.params("robust"), robust_params(args))
    rows = {}
    t0 = time.perf_counter()
    for name, steps in variants:
        model = run_steps(copy.deepcopy(base), [component(METHODS, s, "v", key="method") for s in steps], ctx)
        model.eval()
        clean = evaluate_accuracy(model, data.test)["accuracy"]
        log(name, "clean", clean)
        t1 = time.perf_counter()
        m = CHECKS.get("robust")(model, data, params, CheckContext(seed=0))
        m.pop("per_sample", None)
        rows[name] = {"clean": clean, "robust": m, "seconds": time.perf_counter() - t1}
        log(name, json.dumps({k: m[k] for k in ("accuracy", "accuracy_by_grad_mode", "flags")}))
    return {"setup": "cifar", "budget": {"base": f"resnet20, {args.ckpt} (CIFAR-10 JPEG, {args.train}-image "
                                                 "training subset, 8 epochs)", "binary_epochs": args.binary_epochs,
                                         **robust_params(args)},
            "seconds": time.perf_counter() - t0, "rows": rows}


def table(paths) -> None:
    for p in paths:
        res = json.loads(Path(p).read_text())
        b = res["budget"]
        n = next((r["robust"]["samples"] for r in res["rows"].values() if "robust" in r), 0)
        print(f"\n{res['setup']}: eps={b['eps']:.4g} (L-inf), {n} test samples, APGD {b['steps']} steps, "
              f"APGD-T {b['n_target_classes']} targets, Square {b['n_queries']} queries; {res['seconds']:.0f} s\n")
        print("| variant | clean | APGD-CE true | APGD-T true | **worst, true grads** | APGD-CE STE | APGD-T STE "
              "| Square | **worst, all** | masking flags |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in res["rows"].items():
            if "error" in r:
                print(f"| {name} | failed: {r['error'][:60]} |")
                continue
            m = r["robust"]
            per = {k: v["accuracy"] for k, v in m["per_attack"].items()}
            by = m["accuracy_by_grad_mode"]

            def f(key):
                v = per.get(key, per.get(key.split(":")[0]) if key.endswith(":true") else None)
                return "—" if v is None else f"{100 * v:.1f}"

            codes = ", ".join(fl.split(":")[0] for fl in m["flags"]) or "none"
            print(f"| {name} | {100 * m['clean_accuracy']:.1f} | {f('apgd-ce:true')} | {f('apgd-t:true')} | "
                  f"**{100 * by['true']:.1f}** | {f('apgd-ce:ste')} | {f('apgd-t:ste')} | {f('square')} | "
                  f"**{100 * m['accuracy']:.1f}** | {codes} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setup", choices=["digits", "cifar"])
    ap.add_argument("--table", nargs="*")
    ap.add_argument("--out")
    ap.add_argument("--eps", type=float, default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--targets", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--binary-epochs", type=int, default=None)
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--ckpt", default="bench/logs/ckpt/resnet20_cifar10k_base.pt")
    args = ap.parse_args()
    if args.table:
        return table(args.table)
    torch.set_num_threads(1)
    small = args.setup == "cifar"
    defaults = {"eps": 2 / 255 if small else 0.1, "samples": 200 if small else None, "steps": 20 if small else 100,
                "targets": 3 if small else 9, "queries": 500 if small else 5000, "binary_epochs": 3 if small else 15}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.samples is None:
        args.samples = 10000  # the whole test split
    res = digits(args) if args.setup == "digits" else cifar(args)
    Path(args.out).write_text(json.dumps(res, indent=1))
    table([args.out])


if __name__ == "__main__":
    main()
