"""Pruning benchmark: CIFAR-10 resnet20, one-shot pruning + fine-tuning at fixed sparsities.

Trains (or reloads) a dense resnet20 on a stratified CIFAR-10 training subset, then for
each method and sparsity prunes the dense model and fine-tunes it with the same epoch
budget; records clean test accuracy, real size (``storage.compression_facts``), the
reached sparsity and wall time (pruning + fine-tuning). Results are appended to a JSON
lines file as each row finishes.

Usage (from the repository root, through the CPU slot)::

    OMP_NUM_THREADS=1 python bench/prune_bench.py --out bench/logs/prune_bench.jsonl

The dense checkpoint (``--ckpt``, sturdynet checkpoint format, loads with
``weights_only=True``) is reused when present, so other benchmarks can start from it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sturdynet.core.params import Component, from_dict
from sturdynet.models.common import build_model
from sturdynet.core.registry import METHODS, MODELS
from sturdynet.core.storage import compression_facts
from sturdynet.train import TrainConfig, evaluate_accuracy, fit
from sturdynet.models.arch import arch_of
from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint

from common import cifar_data, log, single_thread_run  # noqa: E402  (bench/ is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/logs/prune_bench.jsonl")
    ap.add_argument("--ckpt", default="bench/logs/ckpt/resnet20_c10_10k_dense.pt")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--dense-epochs", type=int, default=15)
    ap.add_argument("--ft-epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.98])
    ap.add_argument("--methods", nargs="+", default=["prune.global_magnitude", "prune.lamp"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, machine = single_thread_run(args.out)

    t0 = time.perf_counter()
    data, data_spec = cifar_data({"train": args.train, "val": args.val, "test": args.test}, args.seed)
    log(out, {"event": "data", "describe": data.describe(), "seconds": time.perf_counter() - t0})
    model_spec = Component("resnet20", from_dict(MODELS.params("resnet20"), {}, "model"))
    ckpt = Path(args.ckpt)
    base_cfg = TrainConfig(epochs=args.dense_epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=5e-4,
                           momentum=0.9, nesterov=True, warmup_epochs=1.0)
    if ckpt.is_file():
        dense, blob = load_checkpoint(ckpt)
        log(out, {"event": "dense_loaded", "ckpt": str(ckpt), "extra": blob.get("extra", {})})
    else:
        dense = build_model("resnet20", data.in_channels, data.num_classes, data.input_size, data.mean, data.std)
        t = time.perf_counter()
        hist = fit(dense, data, base_cfg, seed=args.seed,
                   progress=lambda r: print(json.dumps(r), flush=True))
        secs = time.perf_counter() - t
        acc = evaluate_accuracy(dense, data.test)["accuracy"]
        extra = {"test_accuracy": acc, "train_seconds": secs, "epochs": args.dense_epochs, "train_subset": args.train,
                 "seed": args.seed, "train_config": {"lr": args.lr, "batch_size": args.batch_size,
                                                     "nesterov": True, "warmup_epochs": 1.0, "weight_decay": 5e-4,
                                                     "augment": "crop_flip"}, "machine": machine}
        save_checkpoint(ckpt, dense, arch_of(model_spec, data, (), data_spec), extra)
        log(out, {"event": "dense_trained", "ckpt": str(ckpt), "history": hist, **extra})
    dense_acc = evaluate_accuracy(dense, data.test)["accuracy"]
    facts = compression_facts(dense)
    log(out, {"event": "row", "method": "dense", "sparsity": 0.0, "test_accuracy": dense_acc,
              "size_bytes": facts["size_bytes"], "epochs": args.dense_epochs, "machine": machine})

    ft_cfg = TrainConfig(epochs=args.ft_epochs, batch_size=args.batch_size, lr=args.lr * 0.1, weight_decay=5e-4,
                         momentum=0.9, nesterov=True)
    for sp in args.sparsities:
        for name in args.methods:
            params = from_dict(METHODS.params(name), {"sparsity": sp}, name)
            t = time.perf_counter()
            pruned = METHODS.get(name)().apply(dense, params)
            t_prune = time.perf_counter() - t
            oneshot = evaluate_accuracy(pruned, data.test)["accuracy"]
            t = time.perf_counter()
            fit(pruned, data, ft_cfg, seed=args.seed)
            secs = t_prune + time.perf_counter() - t
            acc = evaluate_accuracy(pruned, data.test)["accuracy"]
            facts = compression_facts(pruned)
            log(out, {"event": "row", "method": name, "sparsity": sp, "reached_sparsity": facts["sparsity"],
                      "oneshot_accuracy": oneshot, "test_accuracy": acc, "size_bytes": facts["size_bytes"],
                      "dense_size_bytes": facts["dense_size_bytes"], "seconds": secs,
                      "ft_epochs": args.ft_epochs, "dense_epochs": args.dense_epochs, "train_subset": args.train,
                      "machine": machine})


if __name__ == "__main__":
    main()
