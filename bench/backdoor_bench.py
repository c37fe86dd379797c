"""Backdoor benchmark: does a BadNets backdoor survive compression, and does Fine-Pruning remove it?

Runs ``recipes/backdoor-digits.yaml`` (small_cnn on scikit-learn digits, 10% of the
training set poisoned with a 2x2 checkerboard relabelled to 0; dense, pruned, int4,
binary and Fine-Pruning variants) for several seeds, the same recipe with the blended
trigger of Chen et al. (arXiv 1712.05526), and the same recipe without poisoning (the
attack-success-rate floor of clean models). Prints a Markdown table of clean accuracy
and attack success rate per variant (mean and min-max over seeds) and appends every
row to a JSON-lines log.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python bench/backdoor_bench.py --out bench/logs/backdoor_bench.jsonl
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from sturdynet.core.params import load_yaml
from sturdynet.run.recipe import parse_recipe
from sturdynet.run import run_recipe

from common import log  # noqa: E402  (bench/ is on sys.path when run as a script)

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "backdoor-digits.yaml"
SETTINGS = {
    "badnets": None,  # the recipe as it is
    "blend": {"type": "blend", "alpha": 0.2},
    "clean": "none",
}


def _raw(setting: str, seed: int) -> dict:
    raw = copy.deepcopy(load_yaml(RECIPE))
    raw["seed"] = seed
    change = SETTINGS[setting]
    if change == "none":
        raw["data"].pop("poison")
        raw["evaluate"] = [c for c in raw["evaluate"] if c.get("check") != "backdoor"] + [{"check": "backdoor"}]
    elif change:
        raw["data"]["poison"] = {**{k: v for k, v in raw["data"]["poison"].items()
                                    if k not in ("pattern", "size")}, **change}
    return raw


def _fmt(values: List[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}%"
    return f"{mean:.1f}% ({100 * min(values):.1f}-{100 * max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/logs/backdoor_bench.jsonl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node()} CPU, 1 thread"
    table: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    t_all = time.perf_counter()
    for setting in args.settings:
        for seed in args.seeds:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                res = run_recipe(parse_recipe(_raw(setting, seed)), tmp)
            for v in res["variants"]:
                m = v.get("metrics") or {}
                bd, clean = m.get("backdoor") or {}, m.get("clean") or {}
                fp = (v.get("method_log") or {}).get("prune.fine_pruning") or {}
                row = {"setting": setting, "seed": seed, "variant": v["name"], "status": v["status"],
                       "clean_accuracy": clean.get("accuracy"), "attack_success_rate": bd.get("attack_success_rate"),
                       "triggered_accuracy": bd.get("accuracy"), "size_bytes": v.get("size_bytes"),
                       "channels_pruned": fp.get("channels_pruned"), "machine": machine}
                log(out, row)
                if v["status"] == "ok":
                    cell = table.setdefault(v["name"], {}).setdefault(setting, {"clean": [], "asr": []})
                    cell["clean"].append(row["clean_accuracy"])
                    cell["asr"].append(row["attack_success_rate"])
            log(out, {"setting": setting, "seed": seed, "seconds": round(time.perf_counter() - t0, 1)})
    head = "| variant | " + " | ".join(f"{s} clean | {s} ASR" for s in args.settings) + " |"
    print("\n" + head + "\n" + "|---" * (1 + 2 * len(args.settings)) + "|")
    for name, cells in table.items():
        parts = []
        for s in args.settings:
            c = cells.get(s)
            parts += [_fmt(c["clean"]), _fmt(c["asr"])] if c else ["—", "—"]
        print(f"| {name} | " + " | ".join(parts) + " |")
    print(f"\nseeds {args.seeds}; {time.perf_counter() - t_all:.0f} s on {machine}")


if __name__ == "__main__":
    main()
