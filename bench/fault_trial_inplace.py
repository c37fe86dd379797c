"""Fault trials in place (issue 18 part 2): injection + exact restore per trial against the
deep-copy injection, and against the trial's evaluation, interleaved in one run.

Model: CIFAR resnet20 (269,722 parameters, random weights: the timings do not depend on
them), deployed at 8 bits per layer; BER 1e-4 (about 215 of the 2.15 M stored bits per
trial). Evaluation: the ``ber`` check's default, accuracy on 1,000 images of 3x32x32
(synthetic: the time does not depend on the pixels) in batches of 512.

Usage:
    OMP_NUM_THREADS=1 python bench/fault_trial_inplace.py --out bench/results/fault_trial_inplace.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sturdynet.faults import BitErrors, BitView, ViewParams, deploy
from sturdynet.faults.common import accuracy
from sturdynet.models.common import build_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/fault_trial_inplace.json")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--rate", type=float, default=1e-4)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet20", 3, 10, (32, 32)).eval()
    base = deploy(model, ViewParams(bits=8)).eval()
    view = BitView(base, "int")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(args.samples, 3, 32, 32, generator=g), torch.randint(0, 10, (args.samples,), generator=g)
    fm = BitErrors(args.rate)
    copy_s, inplace_s, eval_s, flips = [], [], [], []
    for t in range(args.trials):
        t0 = time.perf_counter()
        faulty, rec = fm.inject(base, torch.Generator().manual_seed(t))  # deep copy + flips
        copy_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with fm.applied(view, torch.Generator().manual_seed(t)) as rec:  # flips in place ...
            t1 = time.perf_counter()
            accuracy(base, (x, y), 512)
            t2 = time.perf_counter()
        t3 = time.perf_counter()  # ... restored
        inplace_s.append((t1 - t0) + (t3 - t2))
        eval_s.append(t2 - t1)
        flips.append(rec["flips"])
    med = {k: statistics.median(v) for k, v in (("deep_copy_inject_s", copy_s), ("inplace_inject_restore_s", inplace_s),
                                                 ("evaluation_s", eval_s))}
    res = {"machine": "2-core CPU shared by 8 engineers (loaded), torch threads 1", "model": "resnet20 8-bit",
           "parameters": sum(p.numel() for p in model.parameters()), "stored_bits": view.total_bits,
           "rate": args.rate, "trials": args.trials, "mean_flips": sum(flips) / len(flips), "median": med,
           "inplace_share_of_evaluation": med["inplace_inject_restore_s"] / med["evaluation_s"],
           "deep_copy_over_inplace": med["deep_copy_inject_s"] / med["inplace_inject_restore_s"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
