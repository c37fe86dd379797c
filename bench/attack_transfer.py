"""Transfer matrix: craft on one variant, attack every other (digits, the default recipe).

Publishing a compressed on-device model hands an attacker a white-box surrogate of the
full model. This benchmark measures how much: the default recipe's base model
(``dense``) and its compressed siblings are built by the recipe runner, then for every
(surrogate, target) pair PGD examples crafted on the surrogate (its own gradient mode:
the STE on quantized and binary surrogates) are evaluated on the target. The diagonal is
the white-box attack; rows are where the examples are crafted, columns who is attacked.

    OMP_NUM_THREADS=1 python bench/attack_transfer.py --out bench/logs/attack_transfer_digits.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sturdynet.core.params import from_dict
from sturdynet.checks import CheckContext
from sturdynet.run.recipe import load_recipe, parse_recipe
from sturdynet.core.registry import CHECKS
from sturdynet.run.runner import Runner
from sturdynet.run.checkpoint import load_checkpoint

VARIANTS = [
    {"name": "pruned-90", "method": "prune.global_magnitude", "sparsity": 0.9, "finetune_epochs": 3},
    {"name": "int8", "method": "quant.uniform", "bits": 8, "act_bits": 8, "mode": "ptq"},
    {"name": "int4", "method": "quant.uniform", "bits": 4},
    {"name": "binary", "method": "binarize", "epochs": 15},
]


def build(out: Path) -> tuple:
    """Run the default recipe with the variants above (resumes from ``out``)."""
    base = load_recipe().to_dict()
    recipe = parse_recipe({**base, "name": "attack-transfer-digits", "variants": [{"name": "dense"}, *VARIANTS],
                           "evaluate": [{"check": "clean"}]})
    runner = Runner(recipe, out, None)
    runner.run()
    models = {"dense": runner.base}
    for v in VARIANTS:
        models[v["name"]], _ = load_checkpoint(out / "variants" / f"{v['name']}.safetensors")
    return runner.data, {k: m.eval() for k, m in models.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/logs/attack_transfer_digits.json")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data, models = build(Path(args.out).with_suffix("") / "run")
    settings = {"eps": args.eps, "steps": args.steps, "attack": "pgd", "samples": 10000, "masking_checks": False}
    matrix = {}
    for sur in models:
        for tgt, model in models.items():
            p = from_dict(CHECKS.params("transfer"), {**settings, "surrogate": sur})
            m = CHECKS.get("transfer")(model, data, p, CheckContext(models=models, seed=0))
            matrix.setdefault(sur, {})[tgt] = {"accuracy": m["accuracy"], "clean": m["clean_accuracy"]}
            print(f"{sur:>10} -> {tgt:<10} {100 * m['accuracy']:.1f}", flush=True)
    res = {"eps": args.eps, "steps": args.steps, "samples": len(data.test), "seconds": time.perf_counter() - t0,
           "matrix": matrix}
    Path(args.out).write_text(json.dumps(res, indent=1))
    names = list(models)
    print(f"\nPGD-{args.steps}, eps={args.eps:g} (L-inf), {len(data.test)} test images, {res['seconds']:.0f} s\n")
    print("| crafted on \\ attacked | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    print("| clean | " + " | ".join(f"{100 * matrix[names[0]][t]['clean']:.1f}" for t in names) + " |")
    for s in names:
        cells = [f"**{100 * matrix[s][t]['accuracy']:.1f}**" if s == t else f"{100 * matrix[s][t]['accuracy']:.1f}"
                 for t in names]
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
