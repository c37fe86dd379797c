"""Peak memory of a 50,000-image run: in-memory loading vs streamed (``stream: true``).

Each mode runs in its own process: load CIFAR-10 (the archive at
/work/shared/datasets: 50,000 train + 10,000 test JPEGs), train an ``mlp`` (64 hidden) one epoch,
then the clean check on the 10,000 test images and a PGD check on 200 (a small ``mlp``, so
the time goes to decoding, the part that streaming changes). Peak resident
memory is the process's ``ru_maxrss`` plus the largest DataLoader worker's
(``RUSAGE_CHILDREN``). The decoded-array cache is switched off (in memory) or pointed at
a fresh folder (streamed: the compressed archive becomes an uncompressed tar there), so
both modes start cold.

    python bench/stream_rss.py --out bench/results/stream_rss.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CIFAR


def one(stream: bool, workers: int, epochs: int) -> dict:
    import torch

    from sturdynet.run.recipe import parse_recipe
    from sturdynet.run.runner import run_recipe

    torch.set_num_threads(1)
    archive = CIFAR if Path(CIFAR).is_file() else "/work/shared/datasets/cifar10-jpeg.tar.gz"
    data = {"name": "imagefolder", "path": archive, "cache": False}
    if stream:
        data.update(stream=True, workers=workers)
    recipe = parse_recipe({
        "data": data, "model": {"name": "mlp", "hidden": [64]},
        "train": {"epochs": epochs, "batch_size": 256, "lr": 0.05, "eval_every": 0},
        "variants": [{"name": "dense"}],
        "evaluate": [{"check": "clean", "batch_size": 500}, {"check": "pgd", "eps": 0.03, "steps": 5, "samples": 200}]})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        res = run_recipe(recipe, out)
    seconds = time.perf_counter() - t0
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    m = res["variants"][0]["metrics"]
    return {"mode": "stream" if stream else "memory", "workers": workers if stream else 0,
            "train_images": res["data"]["train"], "test_images": res["data"]["test"],
            "peak_rss_bytes": me, "peak_worker_rss_bytes": kids, "seconds": seconds,
            "clean_accuracy": m["clean"]["accuracy"], "pgd_accuracy": m["pgd"]["accuracy"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench/results/stream_rss.json")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--mode", choices=["memory", "stream"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(one(args.mode == "stream", args.workers, args.epochs)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "STURDYNET_CACHE": cache, "OMP_NUM_THREADS": "1"}
        for mode in ("stream", "memory"):
            r = subprocess.run([sys.executable, __file__, "--mode", mode, "--workers", str(args.workers),
                                "--epochs", str(args.epochs)], capture_output=True, text=True, env=env)
            if r.returncode:
                print(r.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    by = {r["mode"]: r for r in rows}
    summary = {"command": "python bench/stream_rss.py", "machine": f"{platform.node()}: 2-core CPU shared by 8 "
               "engineers (loaded)", "rows": rows,
               "stream_over_memory_peak_rss": by["stream"]["peak_rss_bytes"] / by["memory"]["peak_rss_bytes"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
