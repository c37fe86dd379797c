"""Quantization-aware and binary training steps against a float step (issue 18 part 4).

One training step (forward, cross-entropy, backward, SGD with momentum) of a CIFAR
ResNet-20 on a batch of 128 3x32x32 images, for the float model and for the variants the
quantization methods build from it: int8 and int4 LSQ (weights and activations,
``quant.uniform mode: lsq``), ternary (TTQ, ``quant.ternary``), binary (``binarize``:
sign weights x per-channel alpha and sign activations) and fixed point (w6a8 with batch-norm
and residual-output quantization, ``quant.fixed_point``). Every variant trains in the
memory layout ``train.fit`` uses (channels_last on CPU). Steps are timed round-robin over
the variants (one step of each, then the next round) so machine load hits every variant
alike; the table reports the median CPU seconds (``time.process_time``) per step and the
ratio to the float step.

    OMP_NUM_THREADS=1 python bench/quant_step_speed.py --rounds 8 --warmup 1 --unfused --out bench/results/quant_step_speed.json

``--unfused`` adds LSQ and fixed-point rows that run the composed fake-quantization graph
(``round_ste(clamp(x / s, lo, hi)) * s``) instead of the fused node, and rows that run the
first fused node (issue 18 part 4, first round: saved ``t`` and ``q``, a bool range mask
built in backward), in the same rounds.

Targets (issue 18): <= 1.3x for int8/int4 LSQ, ternary and binary; <= 1.5x for fixed point.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sturdynet.core.method import MethodContext
from sturdynet.core.registry import METHODS, MODELS
from sturdynet.core.tensors import memory_format_for
from sturdynet.data.base import Split
from sturdynet.train.config import TrainConfig
from sturdynet.train.loop import make_optimizer

VARIANTS: Dict[str, Tuple[str, dict]] = {
    "int8 LSQ (w8a8)": ("quant.uniform", {"mode": "lsq", "bits": 8, "act_bits": 8, "calib_samples": 128}),
    "int4 LSQ (w4a4)": ("quant.uniform", {"mode": "lsq", "bits": 4, "act_bits": 4, "calib_samples": 128}),
    "ternary (TTQ)": ("quant.ternary", {"calib_samples": 128}),
    "binary (sign w x alpha, sign a)": ("binarize", {}),
    "fixed point (w6a8, BN + residual)": ("quant.fixed_point", {"bits": 6, "act_bits": 8, "bn": True, "residual": True,
                                                                "calib_samples": 128}),
}


def build(args: argparse.Namespace) -> Tuple[Dict[str, nn.Module], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    torch.manual_seed(0)
    base = MODELS.create("resnet20", 3, 10, (32, 32), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    ctx = MethodContext(data=SimpleNamespace(train=Split(x, y)), seed=0)
    models = {"float": base}
    for label, (name, params) in VARIANTS.items():
        method, p = METHODS.get(name)(), METHODS.validate(name, params)
        models[label] = method.prepare(base, p) if method.trains else method.apply(base, p, ctx)
    return models, x, y


def composed_fake_quant(x: torch.Tensor, s: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The graph ``FakeQuantSTE`` replaced (for the ``--unfused`` rows)."""
    from sturdynet.quant.base import round_ste

    return round_ste(torch.clamp(x / s, lo, hi)) * s


class FirstFusedFakeQuant(torch.autograd.Function):
    """The first fused node (for the ``first fused node`` rows): saves ``t = x / s`` and
    ``q``, builds the bool range mask in backward; same forward bits as the current one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor, lo: float, hi: float) -> torch.Tensor:  # type: ignore[override]
        t = x / s
        q = torch.clamp(t, lo, hi).round_()
        ctx.save_for_backward(t, q)
        ctx.bounds, ctx.s_shape = (lo, hi), s.shape
        return q * s

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        t, q = ctx.saved_tensors
        lo, hi = ctx.bounds
        inside = (t >= lo) & (t <= hi)
        gx = torch.where(inside, g, 0.0) if ctx.needs_input_grad[0] else None
        gs = torch.where(inside, q - t, q).mul_(g).sum_to_size(ctx.s_shape) if ctx.needs_input_grad[1] else None
        return gx, gs, None, None


ALTERNATIVES = {"unfused": composed_fake_quant, "first fused node": FirstFusedFakeQuant.apply}


@contextlib.contextmanager
def swapped(name: str):
    """LSQ and fixed point with the fake quantization ``ALTERNATIVES[name]`` while active
    (the current node when ``name`` is not a key)."""
    import sturdynet.quant.fixed_point as fp
    import sturdynet.quant.lsq as lsq

    saved = lsq.fake_quant_ste, fp.fake_quant_ste
    if name in ALTERNATIVES:
        lsq.fake_quant_ste = fp.fake_quant_ste = ALTERNATIVES[name]
    try:
        yield
    finally:
        lsq.fake_quant_ste, fp.fake_quant_ste = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="timed steps per variant (round-robin)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=None)
    ap.add_argument("--unfused", action="store_true",
                    help="also time LSQ / fixed point with the composed graph and with the first fused node")
    args = ap.parse_args()
    models, x, y = build(args)
    if args.unfused:
        for alt in ALTERNATIVES:
            for label in [k for k in VARIANTS if "LSQ" in k or "fixed" in k]:
                models[f"{label}, {alt}"] = copy.deepcopy(models[label])
    fmt = memory_format_for(models["float"], torch.device("cpu"))
    xb = x.contiguous(memory_format=fmt)
    opts = {}
    for name, m in models.items():
        m.to(memory_format=fmt).train()
        opts[name] = make_optimizer(m, TrainConfig(lr=0.001))
    times: Dict[str, list] = {n: [] for n in models}
    for r in range(args.warmup + args.rounds):
        for name, m in models.items():
            c = time.process_time()
            with swapped(name.rpartition(", ")[2]):
                loss = F.cross_entropy(m(xb), y)
                opts[name].zero_grad(set_to_none=True)
                loss.backward()
                opts[name].step()
            if r >= args.warmup:
                times[name].append(time.process_time() - c)
    med = {n: statistics.median(t) for n, t in times.items()}
    rows = [{"variant": n, "median_step_cpu_s": round(med[n], 4), "ratio_vs_float": round(med[n] / med["float"], 3),
             "steps": len(times[n])} for n in models]
    for row in rows:
        print(json.dumps(row), flush=True)
    summary = {"event": "quant_step_speed", "model": "resnet20", "batch": args.batch, "layout": str(fmt),
               "threads": torch.get_num_threads(), "rows": rows,
               "machine": f"{platform.node()} {platform.processor() or platform.machine()}, 2-core CPU VM shared with"
                          " another engineer's job (loaded)",
               "torch": torch.__version__,
               "command": f"OMP_NUM_THREADS=1 nice -n 10 python bench/quant_step_speed.py --rounds {args.rounds}"
                          f" --warmup {args.warmup}" + (" --unfused" if args.unfused else "")
                          + (f" --out {args.out}" if args.out else "")}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
