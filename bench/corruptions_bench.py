"""Common-corruption benchmark (Hendrycks & Dietterich, arXiv 1903.12261) on digits.

Runs ``recipes/corruptions-digits.yaml`` (small_cnn width 16; dense, pruned-90, int4 and
binary variants; the ``corruptions`` check: 15 benchmark corruptions x 5 severities on the
359 test images, mCE against dense), then times every registered corruption at severity 3
on a batch of digits images (1x8x8) and of CIFAR-size images (3x32x32). Prints markdown
tables and writes the rows as JSON lines.

Usage::

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python bench/corruptions_bench.py --out bench/logs/corruptions_digits.jsonl
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sturdynet.corruptions import CORRUPTIONS, corrupt
from sturdynet.run.recipe import load_recipe
from sturdynet.run import run_recipe

from common import log  # noqa: E402  (bench/ is on sys.path when run as a script)

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "corruptions-digits.yaml"


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def accuracy_table(results: dict) -> str:
    """Variant x (clean, severity 1..5, mean, mCE, relative mCE)."""
    lines = ["| variant | clean | s=1 | s=2 | s=3 | s=4 | s=5 | mean | mCE | rel. mCE | per-sample (s=3) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in results["variants"]:
        m = v["metrics"]["corruptions"]
        sev = [pct(p["accuracy"]) for p in m["curve"]]
        lines.append(f"| {v['name']} | {pct(m['clean_accuracy'])} | " + " | ".join(sev)
                     + f" | {pct(m['accuracy'])} | {m['mce']:.3f} | "
                     + ("—" if m["relative_mce"] is None else f"{m['relative_mce']:.3f}")
                     + f" | {pct(m['per_sample_accuracy'])} |")
    return "\n".join(lines)


def per_corruption_table(results: dict) -> str:
    """Corruption x variant: accuracy averaged over severities, and CE against dense."""
    names = [v["name"] for v in results["variants"]]
    lines = ["| corruption | " + " | ".join(f"{n} acc / CE" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    first = results["variants"][0]["metrics"]["corruptions"]["per_corruption"]
    for c in first:
        cells = []
        for v in results["variants"]:
            m = v["metrics"]["corruptions"]
            accs = list(m["per_corruption"][c].values())
            ce = m["corruption_errors"][c]["ce"]
            cells.append(f"{pct(sum(accs) / len(accs))} / " + ("—" if ce is None else f"{ce:.2f}"))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput(n_digits: int, n_cifar: int, repeats: int) -> list:
    """Images per second of every corruption at severity 3 (best of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    digits = torch.rand(n_digits, 1, 8, 8, generator=g)
    cifar = F.interpolate(torch.rand(n_cifar, 3, 8, 8, generator=g), size=32, mode="bilinear").clamp(0, 1)
    rows = []
    for name in CORRUPTIONS.names():
        row = {"corruption": name}
        for key, x in (("digits_1x8x8", digits), ("cifar_3x32x32", cifar)):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                corrupt(x, name, 3, torch.Generator().manual_seed(1))
                best = min(best, time.perf_counter() - t0)
            row[key] = len(x) / best
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench/logs/corruptions_digits.jsonl"))
    ap.add_argument("--run-dir", type=Path, default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_recipe(load_recipe(RECIPE), args.run_dir or Path(tmp))
    run_s = time.perf_counter() - t0
    for v in results["variants"]:
        m = v["metrics"]["corruptions"]
        log(args.out, {"variant": v["name"], "status": v["status"], "size_bytes": v.get("size_bytes"),
                       "evaluate_s": v.get("seconds", {}).get("evaluate"),
                       **{k: m.get(k) for k in ("clean_accuracy", "accuracy", "mce", "relative_mce",
                                                "per_sample_accuracy", "curve", "per_corruption",
                                                "corruption_errors", "undefined_relative_ce")}})
    speed = throughput(512, 256, args.repeats)
    for row in speed:
        log(args.out, row)
    print(f"\nrecipe run (train + compress + evaluate): {run_s:.0f} s; machine: {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print(accuracy_table(results) + "\n")
    print(per_corruption_table(results) + "\n")
    print("| corruption | digits 1x8x8 (images/s) | CIFAR-size 3x32x32 (images/s) |\n|---|---|---|")
    for row in speed:
        print(f"| {row['corruption']} | {row['digits_1x8x8']:,.0f} | {row['cifar_3x32x32']:,.0f} |")


if __name__ == "__main__":
    main()
