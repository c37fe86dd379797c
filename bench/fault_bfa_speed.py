"""BFA speed: a re-implementation of the paper's progressive bit search against sturdynet's
``exact`` and ``fast`` searches, interleaved on the same attack batches (issue 18 part 1).

The reference (written here from the paper, arXiv 1903.12269, Algorithm 1 and section 3:
not imported from its repository) quantizes every conv/linear layer to 8 bits with
``s = max|W| / 127``, re-quantizes the weights in every forward pass as the authors'
quantized layers do, and per step: one forward+backward on the attack batch, then per
layer the top-``k`` weights by ``|dL/dw|``, the uphill bits by ``dL/db``, the ``n`` best
applied and scored with a *full* forward pass, the best layer committed (``n`` grows while
no layer raises the loss). All three stop when the held-out balanced accuracy reaches
random guess + 1% (both stop rules are recorded) or at ``--max-flips``.

The cost model (docs/faults.md) predicts the exact search's speed-up per flip from
measured times of one forward and one forward+backward pass and each weight layer's
share of the MACs from it to the output.

Usage (one thread, in the background):
    OMP_NUM_THREADS=1 nice -n 10 python bench/fault_bfa_speed.py --out bench/results/fault_bfa_speed.json \
        > bench/logs/fault_bfa_speed.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import MODELS
from sturdynet.faults import BitFlipAttack, ViewParams, deploy
from sturdynet.core.stats import mean_std
from sturdynet.faults.common import accuracies
from sturdynet.models import model_for_data
from sturdynet.prune.macs import count_macs
from sturdynet.train import TrainConfig, fit

from common import CIFAR, cifar_data  # noqa: E402  (bench/ is on sys.path when run as a script)


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class RefQuantConv(nn.Module):
    """The reference's 8-bit layer: ``round(W / s) * s`` recomputed in every forward."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.step = torch.clamp(layer.weight.detach().float().abs().max(), min=1e-12) / 127

    def forward(self, x):
        wt = self.layer.weight  # straight-through rounding, as the authors' quantized layers
        w = wt + (torch.round(wt / self.step) * self.step - wt).detach()
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


def reference_model(model: nn.Module) -> nn.Module:
    import copy

    model = copy.deepcopy(model).eval()
    for name, m in list(model.named_modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, RefQuantConv(m))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RefQuantConv):
                m.layer.weight.copy_(torch.round(m.layer.weight / m.step) * m.step)
    return model


def reference_bfa(model: nn.Module, x, held, target: float, k_top: int, max_flips: int) -> dict:
    """The paper's progressive bit search, full forward per scored layer."""
    model = reference_model(model)
    layers = [m for m in model.modules() if isinstance(m, RefQuantConv)]
    for m in layers:
        m.layer.weight.requires_grad_(True)
    coef = 2.0 ** torch.arange(8, dtype=torch.float64)
    coef[7] = -128.0
    with torch.no_grad():
        y = model(x).argmax(1)
    flips, seconds, curve, history, evals = 0, 0.0, [{"flips": 0, **accuracies(model, held)}], [], 0
    while flips < max_flips and curve[-1]["balanced_accuracy"] > target:
        t0 = time.perf_counter()
        out = model(x)
        loss_t = F.cross_entropy(out, y)
        grads = torch.autograd.grad(loss_t, [m.layer.weight for m in layers])
        loss = float(loss_t.detach())
        n, best = 1, None
        while True:
            best = None
            for li, (m, g) in enumerate(zip(layers, grads)):
                g = g.reshape(-1)
                idx = g.abs().topk(min(k_top, g.numel())).indices
                w = m.layer.weight.detach().reshape(-1)
                q = torch.round(w[idx] / m.step).long()
                u = q & 0xFF
                b = (u[:, None] >> torch.arange(8)) & 1
                gb = g[idx].double()[:, None] * m.step.double() * coef[None, :]
                score = (gb.abs() * (((b == 0) & (gb > 0)) | ((b == 1) & (gb < 0)))).reshape(-1)
                if int((score > 0).sum()) == 0:
                    continue
                top = score.topk(min(n, int((score > 0).sum()))).indices
                e, bit = idx[top // 8], top % 8
                saved = m.layer.weight.detach().clone()
                with torch.no_grad():
                    flat = m.layer.weight.data.view(-1)
                    for ei, bi in zip(e.tolist(), bit.tolist()):
                        v = int(torch.round(flat[ei] / m.step)) & 0xFF
                        v ^= 1 << bi
                        flat[ei] = (v - 256 if v >= 128 else v) * m.step
                    trial = float(F.cross_entropy(model(x), y))
                    m.layer.weight.data.copy_(saved)
                evals += 1
                if best is None or trial > best[0]:
                    best = (trial, li, e, bit)
            if best is None or best[0] > loss or n >= 64:
                break
            n += 1
        if best is None or best[0] <= loss:
            seconds += time.perf_counter() - t0
            break
        _, li, e, bit = best
        m = layers[li]
        with torch.no_grad():
            flat = m.layer.weight.data.view(-1)
            for ei, bi in zip(e.tolist(), bit.tolist()):
                v = (int(torch.round(flat[ei] / m.step)) & 0xFF) ^ (1 << bi)
                flat[ei] = (v - 256 if v >= 128 else v) * m.step
        flips += len(e)
        seconds += time.perf_counter() - t0
        log("  reference step", flips, "n", n, round(time.perf_counter() - t0, 2), "s")
        history.append((li, e.tolist(), bit.tolist()))
        curve.append({"flips": flips, **accuracies(model, held)})
    return {"flips": flips, "seconds": seconds, "curve": curve, "history": history, "evaluations": evals}


def reached(curve: List[dict], key: str, target: float):
    return next((p["flips"] for p in curve if p[key] <= target), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/fault_bfa_speed.json")
    ap.add_argument("--data", default=CIFAR)
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--held", type=int, default=256)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--first-batch", type=int, default=0, help="skip the first batches (split a run in parts)")
    ap.add_argument("--merge", nargs="+", default=None, help="summarize these partial result files into --out")
    ap.add_argument("--attack-batch", type=int, default=64)
    ap.add_argument("--k-top", type=int, default=10)
    ap.add_argument("--max-flips", type=int, default=40)
    ap.add_argument("--fast-top", type=int, default=3)
    ap.add_argument("--ckpt", default="bench/logs/ckpt/resnet20_bfa_speed.pt")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        res = dict(parts[0], runs=sorted((r for p in parts for r in p["runs"]), key=lambda r: r["batch"]),
                   parts=[{"file": p, "cost_inputs": q["cost_inputs"]} for p, q in zip(args.merge, parts)])
        summarize(res, args.max_flips)
        out.write_text(json.dumps(res, indent=1))
        return
    data, _ = cifar_data({"train": args.train, "test": args.held}, 0, args.data, val_fraction=0.05)
    torch.manual_seed(0)
    model = model_for_data(Component("resnet20", from_dict(MODELS.params("resnet20"), {})), data)
    ckpt = Path(args.ckpt)
    t_train = None
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, weights_only=True))
    else:
        t0 = time.perf_counter()
        fit(model, data, TrainConfig(epochs=args.epochs, lr=0.1, batch_size=128, weight_decay=5e-4, warmup_epochs=1),
            seed=0, progress=lambda e: log("epoch", e.get("epoch"), e.get("val_accuracy")))
        t_train = time.perf_counter() - t0
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), ckpt)
    model.eval()
    held = data.test
    target = 1.0 / data.num_classes + 0.01
    dep = deploy(model, ViewParams(bits=8))
    res: Dict = {"machine": "2-core CPU shared by 8 engineers (loaded), torch threads 1",
                 "budget": {**vars(args), "train_seconds": t_train}, "clean": accuracies(dep, held), "runs": []}
    log("clean", res["clean"])

    # cost model inputs: forward and forward+backward times, suffix MAC shares
    x0 = data.val.x[:args.attack_batch]
    macs = count_macs(dep, x0[:1])["layers"]
    names = list(macs)
    total = sum(v["macs"] for v in macs.values())
    shares = [sum(macs[n]["macs"] for n in names[i:]) / total for i in range(len(names))]
    tf, tfb = [], []
    weights = [m.weight for m in dep.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        y0 = dep(x0).argmax(1)
    for _ in range(5):
        t0 = time.perf_counter()
        with torch.no_grad():
            dep(x0)
        tf.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.autograd.grad(F.cross_entropy(dep(x0), y0), weights)
        tfb.append(time.perf_counter() - t0)
    res["cost_inputs"] = {"forward_s": sorted(tf)[2], "forward_backward_s": sorted(tfb)[2],
                          "layers": len(names), "suffix_share_sum": sum(shares), "suffix_shares": shares}
    log("cost inputs", {k: v for k, v in res["cost_inputs"].items() if k != "suffix_shares"})

    g = torch.Generator().manual_seed(0)
    modes = ["reference", "exact", "fast"]
    for b in range(args.batches):
        idx = torch.randperm(len(data.val), generator=g)[:args.attack_batch]
        if b < args.first_batch:
            continue
        x = data.val.x[idx]
        row = {"batch": b}
        order = modes[b % 3:] + modes[:b % 3]  # rotate who goes first
        for mode in order:
            if mode == "reference":
                r = reference_bfa(model, x, held, target, args.k_top, args.max_flips)
                curve, flips, secs, ev, hist = r["curve"], r["flips"], r["seconds"], r["evaluations"], r["history"]
            else:
                atk = BitFlipAttack(args.k_top, args.max_flips, view=ViewParams(bits=8), search=mode,
                                    fast_top=args.fast_top, widen=False)
                r = atk.run(model, x, held, data.num_classes,
                            callback=lambda ev, m=mode: log(f"  {m} step", ev["flips"], round(ev["seconds"], 2), "s"))
                curve = r.curve
                flips, secs, ev = r.flips, r.seconds, r.evaluations
                hist = [(h["layer"], h["weights"], h["bits"]) for h in r.history]
            row[mode] = {"flips": flips, "seconds": secs, "seconds_per_flip": secs / max(1, flips),
                         "evaluations": ev, "to_random_balanced": reached(curve, "balanced_accuracy", target),
                         "to_random_accuracy": reached(curve, "accuracy", target),
                         "final_balanced": curve[-1]["balanced_accuracy"], "history": hist}
        ref_layers = [h[1:] for h in row["reference"]["history"]]
        row["exact_same_bits_as_reference"] = ref_layers == [h[1:] for h in row["exact"]["history"]]
        res["runs"].append(row)
        log("batch", b, {m: {k: v for k, v in row[m].items() if k != "history"} for m in modes},
            "same bits", row["exact_same_bits_as_reference"])
        summarize(res, args.max_flips)
        out.write_text(json.dumps(res, indent=1))


def summarize(res: Dict, max_flips: int) -> None:
    runs = res["runs"]
    s: Dict = {}
    for m in ("reference", "exact", "fast"):
        spf = sum(r[m]["seconds"] for r in runs) / max(1, sum(r[m]["flips"] for r in runs))
        ftr = [r[m]["to_random_balanced"] if r[m]["to_random_balanced"] is not None else max_flips for r in runs]
        s[m] = {"seconds_per_flip": spf, "flips_to_random": mean_std(ftr, ddof=0),
                "reached": sum(r[m]["to_random_balanced"] is not None for r in runs),
                "evaluations_per_flip": sum(r[m]["evaluations"] for r in runs) / max(1, sum(r[m]["flips"] for r in runs))}
    s["speedup_exact"] = s["reference"]["seconds_per_flip"] / max(1e-12, s["exact"]["seconds_per_flip"])
    s["speedup_fast"] = s["reference"]["seconds_per_flip"] / max(1e-12, s["fast"]["seconds_per_flip"])
    c = res["cost_inputs"]
    fb, f, share = c["forward_backward_s"], c["forward_s"], c["suffix_share_sum"]
    rounds = s["reference"]["evaluations_per_flip"] / c["layers"]  # scoring rounds per flip (n growth)
    s["cost_model"] = {"forward_equivalents_reference": fb / f + rounds * c["layers"],
                       "forward_equivalents_exact": fb / f + rounds * share,
                       "predicted_speedup_exact": (fb / f + rounds * c["layers"]) / (fb / f + rounds * share)}
    s["exact_same_bits_batches"] = sum(r["exact_same_bits_as_reference"] for r in runs)
    s["batches"] = len(runs)
    res["summary"] = s
    log("summary", json.dumps(s))


if __name__ == "__main__":
    main()
