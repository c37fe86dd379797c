"""The ``robust`` ensemble with ``budget: standard`` vs torchattacks' AutoAttack (standard),
and APGD-CE alone vs torchattacks' APGD, timed interleaved in one run on the same model
and images (issue 16 part 4, issue 18 part 4b).

Models: ``--setup digits``, the attack benchmarks' digits MLP (``common.digits_mlp``, seed
0); ``--setup cifar``, a CIFAR-10 resnet20 checkpoint (``--ckpt``, made by
``bench/quant_bench.py --stage base``). The first ``--n`` test images; L-inf eps
``--eps``. sturdynet runs AutoAttack's standard budget (APGD-CE, APGD-T 9 targets, FAB-T 9
targets, Square 5000 queries, 100 iterations, in cascade). torchattacks'
``AutoAttack(version="standard")`` (3.5.1) builds the same four members but with its
attacks' default 10 iterations (Square 5000 queries); a second row builds torchattacks'
members at AutoAttack's documented counts (``steps=100``, same cascade through
``MultiAttack``), and a third runs sturdynet with torchattacks' counts (``steps=10``:
``budget: custom``). APGD: 100 steps, CE loss, on all ``--n`` images (misclassified ones
included: both libraries skip them). Each pair is timed ``--repeats`` times, alternating
which runs first; the ratio of medians is reported, with sturdynet's seconds per member.

    OMP_NUM_THREADS=1 python bench/attack_autoattack.py --out bench/results/attack_autoattack.json
    OMP_NUM_THREADS=1 python bench/attack_autoattack.py --setup cifar --n 100 --eps 0.00784 --repeats 1 \
        --out bench/results/attack_autoattack_cifar.json
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

from sturdynet.run.checkpoint import load_checkpoint  # noqa: E402

from sturdynet.attacks import AutoAttack, create_attack  # noqa: E402
from sturdynet.attacks.autoattack import BUDGETS  # noqa: E402


def cifar_resnet20(ckpt: str):
    """The checkpoint's model in eval mode, the CIFAR-10 test images, labels, clean mask."""
    from common import cifar_data

    model, _ = load_checkpoint(ckpt)
    model.eval()
    data, _ = cifar_data({"train": 1000, "val": 500, "test": 2000})
    x, y = data.test.x, data.test.y
    if x.dtype == torch.uint8:
        x = x.float() / 255
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    return model, x, y, clean


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--setup", choices=["digits", "cifar"], default="digits")
    ap.add_argument("--ckpt", default="bench/logs/ckpt/resnet20_cifar10k_base.pt")
    ap.add_argument("--only", default=None, help="comma-separated row indices (0-3) to run")
    ap.add_argument("--out", default="bench/results/attack_autoattack.json")
    args = ap.parse_args()
    out, machine = single_thread_run(args.out)
    model, x, y, clean = digits_mlp(seed=0) if args.setup == "digits" else cifar_resnet20(args.ckpt)
    x, y, clean = x[:args.n], y[:args.n], clean[:args.n]
    std = {k: v for k, v in BUDGETS["standard"].items() if k != "eot_iter"}
    members = {}

    def ours_aa(steps=100):
        res = AutoAttack(model, eps=args.eps, seed=0, **{**std, "steps": steps}).run(x, y)
        members[steps] = {k: round(v, 3) for k, v in res.seconds.items()}
        return 100 * float(res.robust.float().mean())

    def theirs_aa():
        adv = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps, version="standard", n_classes=10, seed=0)(x, y)
        return robust_pct(model, adv, y, clean)

    def theirs_aa100():  # torchattacks' members at AutoAttack's documented counts, same order and cascade
        kw = {"norm": "Linf", "eps": args.eps, "n_restarts": 1, "seed": 0}
        adv = torchattacks.MultiAttack([
            torchattacks.APGD(model, loss="ce", steps=100, **kw),
            torchattacks.APGDT(model, steps=100, n_classes=10, **kw),
            torchattacks.FAB(model, steps=100, multi_targeted=True, n_classes=10, **kw),
            torchattacks.Square(model, n_queries=5000, **kw)])(x, y)
        return robust_pct(model, adv, y, clean)

    def ours_apgd():
        return robust_pct(model, create_attack("apgd", model, eps=args.eps, steps=100, loss="ce", seed=0)(x, y), y,
                          clean)

    def theirs_apgd():
        return robust_pct(model, torchattacks.APGD(model, eps=args.eps, steps=100, loss="ce", seed=0)(x, y), y, clean)

    rows = []
    pairs = (("sturdynet budget standard (100 iterations) vs torchattacks AutoAttack standard", ours_aa, theirs_aa),
             ("sturdynet budget standard vs torchattacks' members at AutoAttack's documented counts (100 iterations)",
              ours_aa, theirs_aa100),
             ("sturdynet with torchattacks' counts (10 iterations, budget custom) vs torchattacks AutoAttack standard",
              lambda: ours_aa(10), theirs_aa),
             ("APGD-CE 100 steps", ours_apgd, theirs_apgd))
    picks = range(len(pairs)) if args.only is None else [int(i) for i in args.only.split(",")]
    for label, ours, theirs in (pairs[i] for i in picks):
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
               "torchattacks_robust": a_t, "setup": args.setup, "sturdynet_member_s": dict(members),
               "machine": machine + " (2-core CPU shared with other jobs)"}
        members.clear()
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
