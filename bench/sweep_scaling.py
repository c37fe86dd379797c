"""Wall time of one 24-cell sweep (12 grid variants x 2 seeds, digits, an MLP) in-process, on a
local process pool and on local Ray, at 1 and 2 workers; overhead per cell against in-process.

Every configuration runs into a fresh folder; the configurations are interleaved and repeated
(``--rounds``) so that load from other users of the machine hits all of them alike; the median
per configuration is reported. Ray's start (``ray.init``) and the pool's process start are
part of the wall time (Ray's start is also given separately); the driver is warmed up by
one untimed in-process run first, pool and Ray workers pay their own imports.

    nice -n 10 python bench/sweep_scaling.py --rounds 2

Writes bench/results/sweep_scaling.json and prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from sturdynet.run.executor import make_executor  # noqa: E402
from sturdynet.run.recipe import parse_recipe  # noqa: E402
from sturdynet.run.runner import Runner  # noqa: E402

RECIPE = {
    "name": "sweep-scaling", "seed": 0,
    "data": {"name": "digits", "subset": {"train": 600, "test": 300}},
    "model": {"name": "small_cnn", "width": 8},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "variants": [{"name": "q", "method": "quant.uniform", "bits": 8}],
    "sweep": {"seeds": [0, 1], "grid": {"variants.q.bits": [2, 3, 4, 5, 6, 8],
                                        "variants.q.per_channel": [True, False]}},
    "evaluate": [{"check": "clean"}, {"check": "pgd", "eps": 0.1, "steps": 20, "samples": 300}],
}
CONFIGS = [("inprocess", 1), ("pool", 1), ("pool", 2), ("ray", 1), ("ray", 2)]


def run_once(kind: str, workers: int) -> dict:
    t0 = time.perf_counter()
    ex = make_executor(kind, workers)
    t_start = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            runner = Runner(parse_recipe(RECIPE), tmp, executor=ex)
            res = runner.run()
        finally:
            ex.shutdown()
    wall = time.perf_counter() - t0
    assert len(res["cells"]) == 24 and all(c["status"] == "ok" for c in res["cells"]), "a cell failed"
    metrics = {f"{c['name']}#{c['seed']}": c["metrics"]["clean"]["accuracy"] for c in res["cells"]}
    return {"wall": wall, "startup": t_start, "metrics": metrics}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="bench/results/sweep_scaling.json")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    configs = [c for c in CONFIGS if not (args.skip_ray and c[0] == "ray")]
    runs = {f"{k}x{w}": [] for k, w in configs}
    run_once("inprocess", 1)  # warm-up: imports, data cache and torch kernels of the driver process
    ref_metrics = None
    for r in range(args.rounds):
        for kind, workers in configs:
            out = run_once(kind, workers)
            if ref_metrics is None:
                ref_metrics = out["metrics"]
            same = out["metrics"] == ref_metrics
            runs[f"{kind}x{workers}"].append({"wall": out["wall"], "startup": out["startup"], "same_metrics": same})
            print(f"round {r + 1} {kind} x{workers}: {out['wall']:.1f} s (start {out['startup']:.1f} s), "
                  f"metrics identical: {same}", flush=True)
    cells = 24
    base = statistics.median(x["wall"] for x in runs["inprocessx1"])
    table = {}
    for key, xs in runs.items():
        wall = statistics.median(x["wall"] for x in xs)
        table[key] = {"wall_s": wall, "startup_s": statistics.median(x["startup"] for x in xs),
                      "ratio_to_inprocess": wall / base, "overhead_per_cell_s": (wall - base) / cells,
                      "same_metrics": all(x["same_metrics"] for x in xs), "rounds": [x["wall"] for x in xs]}
    for kind in ("pool", "ray"):
        if f"{kind}x1" in table and f"{kind}x2" in table:
            table[f"{kind}x2"]["speedup_vs_1_worker"] = table[f"{kind}x1"]["wall_s"] / table[f"{kind}x2"]["wall_s"]
    result = {"cells": cells, "recipe": RECIPE, "cpus": os.cpu_count(), "threads_per_worker": 1,
              "machine": "2-core CPU shared with other engineers (loaded)", "configs": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("\n| executor | workers | wall (median) | vs in-process | 2 vs 1 worker | start | overhead / cell | same metrics |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for key, t in table.items():
        kind, w = key.split("x")
        sp = f"{t['speedup_vs_1_worker']:.2f}x" if "speedup_vs_1_worker" in t else "—"
        print(f"| {kind} | {w} | {t['wall_s']:.1f} s | {t['ratio_to_inprocess']:.2f}x | {sp} | {t['startup_s']:.1f} s "
              f"| {t['overhead_per_cell_s']:+.2f} s | {t['same_metrics']} |")


if __name__ == "__main__":
    main()
