"""Randomized-smoothing benchmark on digits (Cohen, Rosenfeld and Kolter, arXiv 1902.02918).

Trains small_cnn on digits with standard training and with Gaussian noise augmentation
(the ``gaussian_augment`` callback) at sigma 0.25 and 0.5, then runs the ``certify`` check
(CERTIFY with n0 selection and n estimation samples, alpha 0.001) on every test image,
each noise-trained model at its own training sigma and the standard model at 0.25.
Prints one JSON line per row and, with ``--out``, writes them all plus a markdown table.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python bench/certify_bench.py --out bench/logs/certify_digits.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import List, Optional

import torch

from sturdynet.core.params import Component, from_dict
from sturdynet.data import load_data
from sturdynet.data.digits import DigitsParams
from sturdynet.checks import CheckContext
from sturdynet.models import model_for_data
from sturdynet.models.small_cnn import SmallCNNParams
from sturdynet.core.registry import CHECKS
from sturdynet.train import TrainConfig, fit

RADII = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
#: (row name, training noise sigma or None, certification sigma)
ROWS = (("standard", None, 0.25), ("gaussian_augment 0.25", 0.25, 0.25), ("gaussian_augment 0.5", 0.5, 0.5))


def row(data, name: str, train_sigma: Optional[float], sigma: float, args: argparse.Namespace) -> dict:
    """Train one model and certify it; returns the benchmark row."""
    callbacks = [] if train_sigma is None else [{"name": "gaussian_augment", "sigma": train_sigma}]
    cfg = from_dict(TrainConfig, {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "callbacks": callbacks})
    torch.manual_seed(args.seed)
    model = model_for_data(Component("small_cnn", SmallCNNParams(width=args.width)), data)
    t0 = time.perf_counter()
    fit(model, data, cfg, seed=args.seed)
    train_s = time.perf_counter() - t0
    params = from_dict(CHECKS.params("certify"), {"sigma": sigma, "n0": args.n0, "n": args.n, "alpha": args.alpha,
                                                  "radii": list(RADII), "samples": args.samples})
    t0 = time.perf_counter()
    m = CHECKS.get("certify")(model, data, params, CheckContext(seed=args.seed))
    return {"row": name, "train_sigma": train_sigma, "sigma": sigma, "clean_accuracy": m["clean_accuracy"],
            "noisy_accuracy": m["noisy_accuracy"], "abstain_rate": m["abstain_rate"],
            "mean_radius": m["mean_radius"], "curve": m["curve"], "samples": m["samples"],
            "train_seconds": round(train_s, 1), "certify_seconds": round(time.perf_counter() - t0, 1)}


def table(rows: List[dict]) -> str:
    """The rows as a markdown table (certified accuracy at each radius)."""
    radii = [p["radius"] for p in rows[0]["curve"]]
    head = ["training", "sigma", "clean acc."] + [f"r = {r:g}" for r in radii] + ["abstain", "mean radius",
                                                                                 "certify s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["row"], f"{r['sigma']:g}", f"{100 * r['clean_accuracy']:.1f}%"]
        cells += [f"{100 * p['accuracy']:.1f}%" for p in r["curve"]]
        cells += [f"{100 * r['abstain_rate']:.1f}%", f"{r['mean_radius']:.3f}", f"{r['certify_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--samples", type=int, default=None, help="test images (default: all 359)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = load_data(Component("digits", DigitsParams()), seed=args.seed)
    rows = []
    for name, train_sigma, sigma in ROWS:
        rows.append(row(data, name, train_sigma, sigma, args))
        print(json.dumps(rows[-1]), flush=True)
    md = table(rows)
    print(md)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
                "processor": platform.processor(), "seconds": round(time.perf_counter() - t0, 1)}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows, "table": md}, indent=1) + "\n")


if __name__ == "__main__":
    main()
