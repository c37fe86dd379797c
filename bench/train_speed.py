"""Foundation benchmark: train resnet20 on CIFAR-10 (JPEG copy) with sturdynet.train.fit.

``--compare`` (issue 18 part 3) instead times ``train.fit`` against a plain PyTorch loop
in one process: the same model, data, batch size, crop+flip augmentation, SGD optimizer
(weight decay on weights only, momentum, warm-up + cosine LambdaLR) and seed; the plain
loop is the idiomatic fast one (images stored as uint8, augmentation on uint8 batches,
channels_last on CPU, no per-step host sync). After one untimed warm-up run of each, rounds
alternate which loop goes first; each
run trains a fresh model one epoch over ``--train-subset`` images. The ratio is
fit / plain of CPU seconds (``time.process_time``, robust to other jobs on a shared
machine) per round; the summary has the median and the range, and ``--out`` writes it.

    OMP_NUM_THREADS=1 python bench/train_speed.py --compare --train-subset 2048 --rounds 4 \
        --out bench/results/train_speed_compare.json

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
import torch.nn.functional as F

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
    ap.add_argument("--compare", action="store_true", help="train.fit vs a plain PyTorch loop, interleaved")
    ap.add_argument("--rounds", type=int, default=4, help="--compare: rounds (each runs both loops once)")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    if args.compare:
        compare(args)
        return

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



# ---- --compare: train.fit against a plain PyTorch loop --------------------------------------
def crop_flip_uint8(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding, then a random left-right flip, on a uint8 batch
    (the same draws, in the same order, as ``sturdynet.data.augment.crop_flip``)."""
    n, _, h, w = x.shape
    pad = max(1, min(pad, h // 8))
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = dx[:, None] + torch.arange(w)[None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def plain_epoch(model: torch.nn.Module, x_u8: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, seed: int) -> float:
    """One epoch of the plain loop; returns the mean training loss (synced once, at the end)."""
    import math

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    fmt = torch.channels_last if conv else torch.contiguous_format
    model.to(memory_format=fmt)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum)
    n = len(y)
    total = math.ceil(n / cfg.batch_size) * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    loss_sum = torch.zeros(())
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            xb = crop_flip_uint8(x_u8[idx], gen).float().div_(255).contiguous(memory_format=fmt)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
    model.to(memory_format=torch.contiguous_format)
    return float(loss_sum) / (n * cfg.epochs)


def compare(args: argparse.Namespace) -> None:
    """Interleaved rounds of train.fit and the plain loop (see the module docstring)."""
    import statistics

    from sturdynet.core.registry import MODELS

    t0 = time.perf_counter()
    params = ImageFolderParams(path=args.data, val_fraction=0.0, augment="crop_flip",
                               subset=SubsetParams(train=args.train_subset or 2048, test=64))
    data = load_imagefolder(params, args.seed)
    x_u8 = (data.train.x * 255).round().to(torch.uint8)  # the archive's bytes, exactly
    assert torch.equal(x_u8.float() / 255, data.train.x)
    load_s = time.perf_counter() - t0
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=0.1, momentum=0.9, weight_decay=5e-4,
                      schedule="cosine", eval_every=0)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(args.seed)
        return MODELS.create(args.model, data.in_channels, data.num_classes, data.input_size, data.mean, data.std)

    def run_fit() -> float:
        model = fresh()
        return fit(model, data, cfg, seed=args.seed)[-1]["train_loss"]

    def run_plain() -> float:
        return plain_epoch(fresh(), x_u8, data.train.y, cfg, args.seed)

    for fn in (run_fit, run_plain):  # warm-up, not timed: first-call kernel selection, allocator growth
        fn()
    rows = []
    for r in range(args.rounds):
        row = {"round": r + 1}
        order = [("fit", run_fit), ("plain", run_plain)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            w, c = time.perf_counter(), time.process_time()
            loss = fn()
            row[name] = {"cpu_s": round(time.process_time() - c, 2), "wall_s": round(time.perf_counter() - w, 2),
                         "train_loss": round(loss, 4)}
        row["ratio_cpu"] = round(row["fit"]["cpu_s"] / row["plain"]["cpu_s"], 3)
        row["ratio_wall"] = round(row["fit"]["wall_s"] / row["plain"]["wall_s"], 3)
        row["loadavg_1min"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio_cpu"] for r in rows]
    summary = {"event": "compare", "model": args.model, "train_images": len(data.train), "batch_size": args.batch_size,
               "threads": torch.get_num_threads(), "rounds": rows, "load_seconds": round(load_s, 1),
               "median_ratio_cpu": round(statistics.median(ratios), 3), "min_ratio_cpu": min(ratios),
               "max_ratio_cpu": max(ratios),
               "median_ratio_wall": round(statistics.median(r["ratio_wall"] for r in rows), 3),
               "machine": f"{platform.node()} {platform.processor() or platform.machine()}, shared 2-core CPU (loaded)",
               "torch": torch.__version__,
               "command": "OMP_NUM_THREADS=1 python bench/train_speed.py --compare "
                          f"--train-subset {len(data.train)} --rounds {args.rounds}"}
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
