"""PGD-10 wall time: sturdynet vs a hand-written loop of 10 forward+backward passes vs torchattacks.

All three attack the same batch of the same model (eval mode) with the same eps, step
size and number of gradient evaluations; each is timed ``--repeats`` times in
interleaved order and the median is reported. The raw loop is the cheapest possible
PGD-10: forward, cross-entropy, ``torch.autograd.grad`` w.r.t. the input, signed step,
projection -- no best-iterate bookkeeping and no checks.

    OMP_NUM_THREADS=1 python bench/attack_speed.py --model resnet20 --batch 128
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from sturdynet.attacks import create_attack
from sturdynet.models import build_model


def raw_pgd(model, x, y, eps, alpha, steps, gen):
    x_adv = (x + (2 * torch.rand(x.shape, generator=gen) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        g, = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, nargs="+", default=[8 / 255, 0.25 / 255],
                    help="L-inf budgets; a tiny one keeps every sample unfooled (sturdynet's extra final forward runs)")
    args = ap.parse_args()
    for eps in args.eps:
        bench(args, eps)


def bench(args, eps: float) -> None:
    torch.manual_seed(0)
    model = build_model(args.model, 3, 10, (32, 32)).eval()
    x = torch.rand(args.batch, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right, so no sample is "done" early
    steps = args.steps
    alpha = 2.5 * eps / steps
    ours = create_attack("pgd", model, eps=eps, steps=steps, alpha=alpha, batch_size=args.batch)
    runs = {"raw loop": lambda: raw_pgd(model, x, y, eps, alpha, steps, torch.Generator().manual_seed(0)),
            "sturdynet PGD": lambda: ours(x, y)}
    try:
        import torchattacks
        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        runs["torchattacks PGD"] = lambda: ta(x, y)
    except ImportError:
        pass
    for f in runs.values():  # warm-up
        f()
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    with torch.no_grad():
        fooled = float((model(ours(x, y)).argmax(1) != y).float().mean())
    out = {"model": args.model, "batch": args.batch, "steps": steps, "eps": eps, "fooled": fooled,
           "threads": torch.get_num_threads(), "repeats": args.repeats,
           "median_s": med, "ratio_vs_raw": {k: v / med["raw loop"] for k, v in med.items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
