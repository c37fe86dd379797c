"""Foundation benchmark: train resnet20 on CIFAR-10 (JPEG copy) with sturdynet.train.fit.

Recipe: imagefolder on the shared archive, crop_flip augmentation, SGD lr 0.1,
momentum 0.9, weight decay 5e-4, batch 128, cosine schedule, no validation split.
Prints one JSON line per epoch (seconds, train loss/accuracy, test accuracy) and a
final summary line; ``--out`` also writes the summary as JSON.

Example (one CPU thread, in a benchmark slot):
    OMP_NUM_THREADS=1 python bench/train_speed.py --epochs 10 --out bench/logs/train_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from sturdynet.data.base import SubsetParams
from sturdynet.data.imagefolder import ImageFolderParams, load_imagefolder
from sturdynet.models import model_for_data
from sturdynet.core.params import Component
from sturdynet.train import TrainConfig, evaluate_accuracy, fit

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ARCHIVE), help="CIFAR-10 ImageFolder archive or folder")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-subset", type=int, default=None, help="stratified training subset size")
    ap.add_argument("--test-every", type=int, default=0, help="also test every N epochs (0: only after the last)")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the summary JSON here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    params = ImageFolderParams(path=args.data, val_fraction=0.0, augment="crop_flip",
                               subset=SubsetParams(train=args.train_subset) if args.train_subset else None)
    data = load_imagefolder(params, args.seed)
    load_s = time.perf_counter() - t0
    model = model_for_data(Component(args.model, None), data)
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                      schedule="cosine", eval_every=0)
    rows = []

    last = [time.perf_counter(), time.process_time()]

    def progress(ev: dict) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        row = {k: ev[k] for k in ("epoch", "train_loss", "train_accuracy", "lr") if k in ev}
        row["epoch_seconds"] = round(now - last[0], 1)
        row["epoch_cpu_seconds"] = round(cpu - last[1], 1)  # robust to other jobs sharing the cores
        row["loadavg_1min"] = round(os.getloadavg()[0], 2)
        if ev["epoch"] == args.epochs or (args.test_every and ev["epoch"] % args.test_every == 0):
            row["test_accuracy"] = round(evaluate_accuracy(model, data.test)["accuracy"], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
        last[:] = [time.perf_counter(), time.process_time()]  # test evaluation is not counted

    print(json.dumps({"event": "start", "data": {**data.describe(), "class_names": None}, "load_seconds": round(load_s, 1),
                      "threads": torch.get_num_threads(), "model": args.model, "epochs": args.epochs,
                      "params": sum(p.numel() for p in model.parameters())}), flush=True)
    t1 = time.perf_counter()
    fit(model, data, cfg, seed=args.seed, progress=progress)
    if rows and "test_accuracy" not in rows[-1]:
        rows[-1]["test_accuracy"] = round(evaluate_accuracy(model, data.test)["accuracy"], 4)
    total = time.perf_counter() - t1
    summary = {"event": "done", "model": args.model, "train_samples": len(data.train), "test_samples": len(data.test),
               "epochs_run": len(rows), "threads": torch.get_num_threads(), "load_seconds": round(load_s, 1),
               "data_from_cache": data.info.get("from_cache"), "total_seconds": round(total, 1),
               "mean_epoch_seconds": round(sum(r["epoch_seconds"] for r in rows) / max(1, len(rows)), 1),
               "mean_epoch_cpu_seconds": round(sum(r["epoch_cpu_seconds"] for r in rows) / max(1, len(rows)), 1),
               "final_test_accuracy": rows[-1].get("test_accuracy") if rows else None,
               "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "epochs": rows}
    print(json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
