"""Binary-network benchmark: CIFAR-10 (JPEG copy), Bi-Real ResNet-20, STE / ReSTE / OvSW / RA-BNN.

Budget (same for every row): ``bireal_resnet20`` (binary weights and activations, full
precision stem, classifier and downsample shortcuts) trained from scratch for
``--epochs`` epochs on a stratified ``--train`` image subset (crop+flip), SGD lr 0.1,
momentum 0.9, weight decay 5e-4, 1 warm-up epoch then cosine, batch 128. RA-BNN spends
``--grow-epochs`` of the same budget growing and the rest re-training the grown model.
A float ``resnet20`` trained on the same budget is the reference row.

Columns: clean test accuracy, size in bytes (``storage.compression_facts``), the time of
one training step (batch 128, forward + backward + SGD step, median) relative to float,
and the silent-weight fraction of the binary weights at the end of training (OvSW's
definition: sign-flip EMA with m = 0.999 below tau = 1e-4, ``binary_silent_fraction``)
plus the fraction never flipped.

``--from-base CKPT`` instead starts every binary row from the quantization benchmark's
float resnet20 base (``bench/quant_bench.py --stage base``), mapped onto its Bi-Real twin by
``binarize.bireal`` (Bi-Real's real-valued initialization), and trains ``--epochs`` at
``--lr`` (2 epochs at 0.01 = the quantization rows' fine-tuning budget); RA-BNN spends
``--grow-epochs`` of them growing.

Usage::

    python bench/binary_bench.py --out bench/logs/binary_bench.json [--only 0,1]
    # rows trained in several processes: merge them and time every row in one process
    python bench/binary_bench.py --time-only --merge a.json b.json --out bench/logs/binary_bench.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sturdynet.train.context import training_context
from sturdynet.core.params import component, from_dict
from sturdynet.models.common import model_for_data
from sturdynet.quant.binary.bireal_init import bireal_twin
from sturdynet.quant.binary.ovsw import OvSW
from sturdynet.quant.binary.ra_bnn import RABNNGrow, RABNNParams
from sturdynet.quant.binary.reste import ReSTEAnneal
from sturdynet.quant.binary.sign_flips import SignFlips
from sturdynet.core.registry import MODELS
from sturdynet.core.storage import compression_facts
from sturdynet.run.checkpoint import load_checkpoint
from sturdynet.train.config import TrainConfig
from sturdynet.train.loop import evaluate_accuracy, fit

from common import cifar_data, step_time  # noqa: E402  (bench/ is on sys.path when run as a script)

STE = {"estimator": "clipped_ste", "weight_estimator": "clipped_ste"}
ROWS = [
    ("float resnet20 (same budget)", "resnet20", {}, "plain"),
    ("binary STE (clipped)", "bireal_resnet20", STE, "ste"),
    ("binary ReSTE", "bireal_resnet20", {"estimator": "reste", "weight_estimator": "reste"}, "reste"),
    ("binary OvSW (clipped STE + AGS + SAD)", "bireal_resnet20", STE, "ovsw"),
    ("RA-BNN grown (clipped STE)", "bireal_resnet20", STE, "ra_bnn"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--grow-epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--out", default="bench/logs/binary_bench.json")
    ap.add_argument("--only", default=None, help="comma-separated row indices")
    ap.add_argument("--time-only", action="store_true", help="only re-time the rows of --merge, in one process")
    ap.add_argument("--from-base", default=None, help="float resnet20 checkpoint to start the binary rows from")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--merge", nargs="*", default=[])
    args = ap.parse_args()
    if args.time_only:
        return retime(args)
    torch.set_num_threads(1)
    seed = 0
    data, _ = cifar_data({"train": args.train, "val": 500, "test": args.test}, seed)
    warm = 0 if args.from_base else 1
    cfg = from_dict(TrainConfig, {"epochs": args.epochs, "batch_size": 128, "lr": args.lr, "weight_decay": 5e-4,
                                  "warmup_epochs": warm, "eval_every": args.epochs})
    base = load_checkpoint(args.from_base)[0] if args.from_base else None
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else {}
    picks = range(len(ROWS)) if args.only is None else [int(i) for i in args.only.split(",")]
    for i in picks:
        name, arch, mparams, kind = ROWS[i]
        torch.manual_seed(seed)
        if base is not None:
            if kind == "plain":
                continue
            model = bireal_twin(base, mparams["estimator"], mparams["weight_estimator"])
            name = name + " from float base"
        else:
            model = model_for_data(component(MODELS, {"name": arch, **mparams}, "model"), data)
        acc0 = evaluate_accuracy(model, data.test)["accuracy"]

        def progress(e, name=name):
            print(name, json.dumps(e), flush=True)

        t0 = time.perf_counter()
        log: dict = {}
        if kind == "ra_bnn":
            ctx = training_context(data, cfg, seed=seed, progress=progress)
            params = RABNNParams(grow_epochs=args.grow_epochs, retrain_epochs=args.epochs - args.grow_epochs,
                                 lr=args.lr)
            model = RABNNGrow().apply(model, params, ctx)
            log = ctx.log["ra_bnn"]
            hist = log.get("retrain_history", [])
        else:
            cbs = {"plain": [], "ste": [SignFlips()], "reste": [ReSTEAnneal(), SignFlips()], "ovsw": [OvSW()]}[kind]
            hist = fit(model, data, cfg, seed=seed, callbacks=cbs, progress=progress)
        seconds = time.perf_counter() - t0
        acc = evaluate_accuracy(model, data.test)["accuracy"]
        facts = compression_facts(model)
        st = step_time(model, data, args.steps, warmup=2)
        last = hist[-1] if hist else {}
        rows[name] = {"arch": arch, "model_params": mparams, "accuracy": acc, "accuracy_before_training": acc0,
                      "size_bytes": facts["size_bytes"],
                      "params": facts["params"], "step_seconds": st,
                      "silent_fraction": last.get("binary_silent_fraction"),
                      "never_flipped_fraction": last.get("binary_never_flipped_fraction"),
                      "flip_fraction_last_epoch": last.get("binary_flip_fraction"),
                      "widths": list(getattr(model, "widths", [])), "seconds": seconds, "history": hist,
                      "method_log": {k: v for k, v in log.items() if not k.endswith("history")},
                      "budget": {k: v for k, v in vars(args).items() if k != "only"}}
        fl = rows.get("float resnet20 (same budget)", {}).get("step_seconds")
        for r in rows.values():
            r["step_rel_float"] = r["step_seconds"] / fl if fl else None
        out.write_text(json.dumps(rows, indent=1, default=str))
        print(f"ROW {name}: acc {acc:.4f} size {facts['size_bytes']} step {st * 1000:.0f} ms "
              f"silent {rows[name]['silent_fraction']}", flush=True)


def retime(args) -> None:
    """Merge row files and measure every row's step time back to back (same load for all)."""
    torch.set_num_threads(1)
    rows: dict = {}
    for f in args.merge:
        rows.update(json.loads(Path(f).read_text()))
    data, _ = cifar_data({"train": 512, "val": 0, "test": 100}, 0)
    ref = "float resnet20 (same budget)"
    rows.setdefault(ref, {"arch": "resnet20", "model_params": {}, "step_seconds": None, "timing_only": True})
    for name, r in rows.items():
        p = dict(r.get("model_params", {}))
        if r.get("widths") and r["arch"] != "resnet20":
            p["widths"] = r["widths"]
        torch.manual_seed(0)
        model = model_for_data(component(MODELS, {"name": r["arch"], **p}, "model"), data)
        r["step_seconds_train_process"] = r.get("step_seconds")
        r["step_seconds"] = step_time(model, data, args.steps, warmup=2)
        print(f"TIME {name}: {r['step_seconds'] * 1000:.0f} ms", flush=True)
    fl = rows[ref]["step_seconds"]
    for r in rows.values():
        r["step_rel_float"] = r["step_seconds"] / fl if fl else None
    Path(args.out).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
