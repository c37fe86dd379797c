"""The ``robust`` ensemble with ``budget: standard`` vs torchattacks' AutoAttack (standard),
and APGD-CE alone vs torchattacks' APGD, timed interleaved in one run on the same model
and images (issue 16 part 4, issue 18 part 4b).

Model: the attack benchmarks' digits MLP (``common.digits_mlp``, seed 0); the first
``--n`` test images; L-inf eps ``--eps``. sturdynet runs AutoAttack's standard budget
(APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square 5000 queries, 100 iterations, in
cascade). torchattacks' ``AutoAttack(version="standard")`` (3.5.1) builds the same four
members but with its attacks' default 10 iterations (Square 5000 queries), so a second
row runs sturdynet with those counts (``steps=10``: ``budget: custom``). APGD: 100 steps, CE loss, on all ``--n`` images (misclassified ones included:
both libraries skip them). Each pair is timed ``--repeats`` times, alternating which runs
first; the ratio of medians is reported.

    OMP_NUM_THREADS=1 python bench/attack_autoattack.py --out bench/results/attack_autoattack.json
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
from common import digits_mlp, robust_pct, single_thread_run  # noqa: E402

from sturdynet.attacks import AutoAttack, create_attack  # noqa: E402
from sturdynet.attacks.autoattack import BUDGETS  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/attack_autoattack.json")
    args = ap.parse_args()
    out, machine = single_thread_run(args.out)
    model, x, y, clean = digits_mlp(seed=0)
    x, y, clean = x[:args.n], y[:args.n], clean[:args.n]
    std = {k: v for k, v in BUDGETS["standard"].items() if k != "eot_iter"}

    def ours_aa(steps=100):
        res = AutoAttack(model, eps=args.eps, seed=0, **{**std, "steps": steps}).run(x, y)
        return 100 * float(res.robust.float().mean())

    def theirs_aa():
        adv = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps, version="standard", n_classes=10, seed=0)(x, y)
        return robust_pct(model, adv, y, clean)

    def ours_apgd():
        return robust_pct(model, create_attack("apgd", model, eps=args.eps, steps=100, loss="ce", seed=0)(x, y), y,
                          clean)

    def theirs_apgd():
        return robust_pct(model, torchattacks.APGD(model, eps=args.eps, steps=100, loss="ce", seed=0)(x, y), y, clean)

    rows = []
    pairs = (("sturdynet budget standard (100 iterations) vs torchattacks AutoAttack standard", ours_aa, theirs_aa),
             ("sturdynet with torchattacks' counts (10 iterations, budget custom) vs torchattacks AutoAttack standard",
              lambda: ours_aa(10), theirs_aa),
             ("APGD-CE 100 steps", ours_apgd, theirs_apgd))
    for label, ours, theirs in pairs:
        t_o, t_t, a_o, a_t = [], [], None, None
        for r in range(args.repeats):
            pair = [("o", ours), ("t", theirs)] if r % 2 == 0 else [("t", theirs), ("o", ours)]
            for who, fn in pair:
                t, acc = timed(fn)
                (t_o if who == "o" else t_t).append(t)
                if who == "o":
                    a_o = acc
                else:
                    a_t = acc
        row = {"attack": label, "n": args.n, "eps": args.eps, "clean": 100 * float(clean.float().mean()),
               "sturdynet_s": statistics.median(t_o), "torchattacks_s": statistics.median(t_t),
               "ratio": statistics.median(t_o) / statistics.median(t_t), "sturdynet_robust": a_o,
               "torchattacks_robust": a_t, "machine": machine + " (2-core CPU shared with other jobs)"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
