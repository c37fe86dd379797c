"""Quantization benchmark: CIFAR-10 (JPEG copy), resnet20, float vs int8 / int4 / ternary / fixed point.

Budget (same for every row): the float base is trained ``--base-epochs`` on a stratified
``--train`` image subset (crop+flip augmentation); every variant (float included) is
then fine-tuned / quantization-aware trained ``--epochs`` epochs at lr/10 from that base.
Columns: clean test accuracy, size in bytes (``storage.compression_facts``), the
packed export's weight payload, and the time of one training step (batch 128, forward +
backward + SGD step, median of ``--steps`` steps) relative to float.

Usage::

    python bench/quant_bench.py --stage base                      # trains, saves the shared base checkpoint
    python bench/quant_bench.py --stage variants --only 0,1 --out a.json   # rows (accuracy, size)
    python bench/quant_bench.py --stage timing                    # step times, all variants interleaved
    python bench/quant_bench.py --stage table a.json b.json ...   # markdown table
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sturdynet.core.method import MethodContext, run_steps
from sturdynet.train.context import training_context
from sturdynet.core.params import component, from_dict
from sturdynet.models.common import model_for_data
from sturdynet.core.registry import METHODS, MODELS
from sturdynet.core.storage import compression_facts
from sturdynet.models.arch import arch_of
from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint
from sturdynet.train.config import TrainConfig
from sturdynet.train.loop import evaluate_accuracy, fit

from common import cifar_data, step_time  # noqa: E402  (bench/ is on sys.path when run as a script)

VARIANTS = [
    ("float", []),
    ("int8 (PTQ, w8a8)", [{"method": "quant.uniform", "bits": 8, "act_bits": 8, "mode": "ptq"}]),
    ("int4 (LSQ, w4a4)", [{"method": "quant.uniform", "bits": 4, "act_bits": 4, "mode": "lsq"}]),
    ("ternary (TTQ)", [{"method": "quant.ternary", "threshold": 0.05}]),
    ("fixed-point (w6a8, BN+residual)", [{"method": "quant.fixed_point", "bits": 6, "act_bits": 8,
                                           "bn": True, "residual": True}]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", choices=["base", "variants", "timing", "table"], required=True)
    ap.add_argument("files", nargs="*", help="row JSON files for --stage table")
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--base-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ckpt", default="bench/logs/ckpt/resnet20_cifar10k_base.pt")
    ap.add_argument("--out", default="bench/logs/quant_bench.json")
    ap.add_argument("--only", default=None, help="comma-separated row indices")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seed = 0
    if args.stage == "table":
        return table(args)
    data, dspec = cifar_data({"train": args.train, "val": 500, "test": args.test}, seed)
    mspec = component(MODELS, {"name": "resnet20"}, "model")
    base_cfg = from_dict(TrainConfig, {"epochs": args.base_epochs, "batch_size": 128, "lr": 0.1,
                                       "weight_decay": 5e-4, "warmup_epochs": 1, "eval_every": 5})
    ckpt = Path(args.ckpt)
    if args.stage == "base":
        torch.manual_seed(seed)
        model = model_for_data(mspec, data)
        t0 = time.perf_counter()
        hist = fit(model, data, base_cfg, seed=seed, progress=lambda e: print(json.dumps(e), flush=True))
        acc = evaluate_accuracy(model, data.test)["accuracy"]
        save_checkpoint(ckpt, model, arch_of(mspec, data, (), dspec),
                        {"history": hist, "test_accuracy": acc, "seconds": time.perf_counter() - t0,
                         "budget": vars(args)})
        print(f"base test accuracy {acc:.4f}, saved {ckpt}", flush=True)
        return
    base, _ = load_checkpoint(ckpt)
    ft_cfg = from_dict(TrainConfig, {"epochs": args.epochs, "batch_size": 128, "lr": 0.01,
                                     "weight_decay": 5e-4, "eval_every": args.epochs})
    out_path = Path(args.out)
    rows = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.stage == "timing":
        return timing(args, base, data, out_path)
    picks = range(len(VARIANTS)) if args.only is None else [int(i) for i in args.only.split(",")]
    from sturdynet.export import export_model

    for i in picks:
        name, steps_raw = VARIANTS[i]
        steps = [component(METHODS, s, f"steps[{j}]", key="method") for j, s in enumerate(steps_raw)]
        ctx = training_context(data, ft_cfg, seed=seed)
        t0 = time.perf_counter()
        model = run_steps(copy.deepcopy(base), steps, ctx)
        acc0 = evaluate_accuracy(model, data.test)["accuracy"]
        hist = fit(model, data, ft_cfg, seed=seed, progress=lambda e: print(name, json.dumps(e), flush=True))
        acc = evaluate_accuracy(model, data.test)["accuracy"]
        facts = compression_facts(model)
        with tempfile.TemporaryDirectory() as tmp:
            info = export_model(model, Path(tmp) / "m.sturdy", arch_of(mspec, data, steps, dspec))
        rows[name] = {"accuracy_before_finetune": acc0, "accuracy": acc, "size_bytes": facts["size_bytes"],
                      "export_payload_bytes": info["payload_bytes"], "export_file_bytes": info["file_bytes"],
                      "bits": facts["bits"], "seconds": time.perf_counter() - t0, "history": hist,
                      "method_log": ctx.log, "budget": {k: v for k, v in vars(args).items() if k != "only"}}
        out_path.write_text(json.dumps(rows, indent=1, default=str))
        print(f"ROW {name}: acc {acc:.4f} (before ft {acc0:.4f}) size {facts['size_bytes']} "
              f"payload {info['payload_bytes']}", flush=True)


def timing(args, base, data, out_path: Path) -> None:
    """Median training-step time of every variant, measured round-robin in one process."""
    models = {}
    for name, steps_raw in VARIANTS:
        steps = [component(METHODS, s, f"steps[{j}]", key="method") for j, s in enumerate(steps_raw)]
        models[name] = run_steps(copy.deepcopy(base), steps, MethodContext(data=data, seed=0))
    times = {n: [] for n in models}
    for _ in range(args.rounds):
        for n, m in models.items():
            times[n].append(step_time(m, data, args.steps, warmup=3))
    med = {n: statistics.median(t) for n, t in times.items()}
    out = {n: {"step_seconds": med[n], "step_rel_float": med[n] / med["float"], "rounds": times[n]} for n in med}
    out_path.write_text(json.dumps(out, indent=1))
    for n, r in out.items():
        print(f"{n}: {r['step_seconds'] * 1000:.1f} ms/step, x{r['step_rel_float']:.2f}", flush=True)


def table(args) -> None:
    """Merge row files (later files win per key) and print the markdown table."""
    rows = {}
    for f in args.files:
        for name, r in json.loads(Path(f).read_text()).items():
            rows.setdefault(name, {}).update(r)
    print("| variant | clean acc. (before FT) | size bytes | export payload bytes | step time vs float |")
    print("|---|---|---|---|---|")
    for name, _ in VARIANTS:
        r = rows.get(name)
        if not r or "accuracy" not in r:
            continue
        rel = f"{r['step_rel_float']:.2f}x" if r.get("step_rel_float") else "-"
        print(f"| {name} | {r['accuracy']:.4f} ({r['accuracy_before_finetune']:.4f}) | {r['size_bytes']:,} | "
              f"{r['export_payload_bytes']:,} | {rel} |")


if __name__ == "__main__":
    main()
