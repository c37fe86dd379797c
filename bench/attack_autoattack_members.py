"""AutoAttack's members one by one, sturdynet vs torchattacks at equal budgets, on the
samples APGD-CE leaves robust (issue 16 part 4: where the ensemble's time goes).

Model: ``--setup cifar`` (a resnet20 checkpoint, ``--ckpt``) or ``--setup digits`` (the
attack benchmarks' MLP); the clean-correct images among the first ``--n`` test images that
a 100-step APGD-CE leaves correct; L-inf eps ``--eps``. APGD-T and FAB-T (9 targets,
``--steps`` iterations) and Square (``--queries``) from both libraries, each pair timed
``--repeats`` times alternating which runs first; the ratio of medians.

    OMP_NUM_THREADS=1 python bench/attack_autoattack_members.py --setup cifar --steps 20 --queries 1000 \\
        --out bench/results/attack_autoattack_members_cifar.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchattacks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_autoattack import cifar_resnet20  # noqa: E402
from common import digits_mlp, single_thread_run  # noqa: E402

from sturdynet.attacks import create_attack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setup", choices=["digits", "cifar"], default="cifar")
    ap.add_argument("--ckpt", default="bench/logs/ckpt/resnet20_cifar10k_base.pt")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.00784)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/results/attack_autoattack_members_cifar.json")
    args = ap.parse_args()
    out, machine = single_thread_run(args.out)
    model, x, y, clean = digits_mlp(seed=0) if args.setup == "digits" else cifar_resnet20(args.ckpt)
    x, y = x[:args.n][clean[:args.n]], y[:args.n][clean[:args.n]]
    eps = args.eps
    adv = create_attack("apgd", model, eps=eps, steps=100, seed=0)(x, y)
    with torch.no_grad():
        keep = model(adv).argmax(1) == y
    xr, yr = x[keep], y[keep]
    kw = {"norm": "Linf", "eps": eps, "n_restarts": 1, "seed": 0}
    pairs = {
        "apgd-t": (lambda: create_attack("apgd-t", model, eps=eps, steps=args.steps, n_target_classes=9, seed=0),
                   lambda: torchattacks.APGDT(model, steps=args.steps, n_classes=10, **kw)),
        "fab-t": (lambda: create_attack("fab-t", model, eps=eps, steps=args.steps, n_target_classes=9, seed=0),
                  lambda: torchattacks.FAB(model, steps=args.steps, multi_targeted=True, n_classes=10, **kw)),
        "square": (lambda: create_attack("square", model, eps=eps, n_queries=args.queries, seed=0),
                   lambda: torchattacks.Square(model, n_queries=args.queries, **kw)),
    }
    rows = []
    for name, (ours, theirs) in pairs.items():
        times = {"o": [], "t": []}
        robust = {}
        for r in range(args.repeats):
            for who, make in ([("o", ours), ("t", theirs)] if r % 2 == 0 else [("t", theirs), ("o", ours)]):
                atk = make()
                t0 = time.perf_counter()
                a = atk(xr, yr)
                times[who].append(time.perf_counter() - t0)
                with torch.no_grad():
                    robust[who] = 100 * float((model(a).argmax(1) == yr).float().mean())
        row = {"member": name, "setup": args.setup, "samples": int(keep.sum()), "steps": args.steps,
               "queries": args.queries, "eps": eps, "sturdynet_s": times["o"], "torchattacks_s": times["t"],
               "ratio": statistics.median(times["o"]) / statistics.median(times["t"]),
               "sturdynet_robust": robust["o"], "torchattacks_robust": robust["t"], "machine": machine}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
