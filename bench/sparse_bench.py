"""Lottery-ticket and sparse-training benchmark: CIFAR-10 resnet20 at fixed sparsities.

Every row trains resnet20 from the same seeded initial weights on a stratified CIFAR-10
subset and gets the same training budget of ``--budget`` epochs (E):

* ``gm``: dense training for E/2 epochs, global magnitude pruning, E/2 epochs of fine-tuning
  at lr/10 (the reference row, same shape as bench/prune_bench.py);
* ``imp``: prune.imp, ``--imp-rounds`` pruning rounds plus the dense round, E / (rounds + 1)
  epochs each, rewinding to ``--rewind-step``;
* ``colt``: prune.colt (two class partitions), E/3 epochs per cycle and for the final ticket
  (so the total depends on the number of cycles; logged);
* ``set`` / ``rigl`` / ``agent`` (RigL + AGENT): sparse from scratch with an ERK mask for E epochs.

Records clean test accuracy, real size (``storage.compression_facts``), the reached
sparsity, total training epochs and wall time, one JSON line per row as it finishes.

Usage (from the repository root, through the CPU slot)::

    OMP_NUM_THREADS=1 python bench/sparse_bench.py --sparsities 0.9 --out bench/logs/sparse_bench.jsonl
"""
from __future__ import annotations

import argparse
import time

import torch

from sturdynet.core.method import TrainingContext
from sturdynet.train.context import training_context
from sturdynet.core.params import from_dict
from sturdynet.models.common import build_model
from sturdynet.core.registry import METHODS
from sturdynet.core.storage import compression_facts
from sturdynet.train import TrainConfig, evaluate_accuracy, fit

from common import cifar_data, log, single_thread_run  # noqa: E402  (bench/ is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/logs/sparse_bench.jsonl")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--budget", type=int, default=6, help="training epochs per row")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.98])
    ap.add_argument("--rows", nargs="+", default=["gm", "set", "rigl", "imp", "colt", "agent"])
    ap.add_argument("--imp-rounds", type=int, default=2)
    ap.add_argument("--rewind-step", type=int, default=20)
    ap.add_argument("--colt-rate", type=float, default=0.6)
    ap.add_argument("--delta-t", type=int, default=20, help="RigL update interval (steps)")
    ap.add_argument("--round-epochs", type=int, default=None,
                    help="IMP / COLT: epochs of every training run (default: the budget split over the runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, machine = single_thread_run(args.out)

    t0 = time.perf_counter()
    data, _ = cifar_data({"train": args.train, "val": args.val, "test": args.test}, args.seed)
    log(out, {"event": "data", "train": len(data.train), "val": len(data.val), "test": len(data.test),
              "seconds": time.perf_counter() - t0})
    torch.manual_seed(args.seed)
    init = build_model("resnet20", data.in_channels, data.num_classes, data.input_size, data.mean, data.std)
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    E = args.budget

    def cfg(epochs: int, lr: float = args.lr, warm: float = 0.5) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=lr, weight_decay=5e-4, momentum=0.9,
                           nesterov=True, warmup_epochs=min(warm, float(epochs)))

    def ctx_for(train_cfg: TrainConfig) -> TrainingContext:
        ctx = training_context(data, train_cfg, seed=args.seed, device=torch.device("cpu"))
        ctx.init_state = init_state  # the runner-provided initial weights (see docs/sparse-training.md)
        return ctx

    def finish(name: str, sp: float, model, secs: float, epochs: float, extra: dict) -> None:
        facts = compression_facts(model)
        acc = evaluate_accuracy(model, data.test)["accuracy"]
        log(out, {"event": "row", "method": name, "sparsity": sp, "reached_sparsity": facts["sparsity"],
                  "test_accuracy": acc, "size_bytes": facts["size_bytes"], "dense_size_bytes": facts["dense_size_bytes"],
                  "seconds": secs, "train_epochs": epochs, "budget": E, "train_subset": len(data.train),
                  "machine": machine, **extra})

    dense = None
    for sp in args.sparsities:
        for row in args.rows:
            t = time.perf_counter()
            if row == "gm":
                if dense is None:
                    dense = build_model("resnet20", data.in_channels, data.num_classes, data.input_size,
                                        data.mean, data.std)
                    dense.load_state_dict(init_state)
                    td = time.perf_counter()
                    fit(dense, data, cfg(E // 2), seed=args.seed)
                    dense_secs = time.perf_counter() - td
                    finish("dense", 0.0, dense, dense_secs, E // 2, {})
                    t = time.perf_counter()
                params = from_dict(METHODS.params("prune.global_magnitude"), {"sparsity": sp}, "gm")
                model = METHODS.get("prune.global_magnitude")().apply(dense, params)
                fit(model, data, cfg(E - E // 2, lr=args.lr * 0.1, warm=0.0), seed=args.seed)
                finish("prune.global_magnitude+ft", sp, model, time.perf_counter() - t + dense_secs, E, {})
                continue
            base = build_model("resnet20", data.in_channels, data.num_classes, data.input_size, data.mean, data.std)
            if row == "imp":
                per = args.round_epochs or max(1, E // (args.imp_rounds + 1))
                ctx = ctx_for(cfg(per))
                p = {"sparsity": sp, "rounds": args.imp_rounds, "rewind_step": args.rewind_step}
                model = METHODS.get("prune.imp")().apply(base, from_dict(METHODS.params("prune.imp"), p, "imp"), ctx)
                finish("prune.imp", sp, model, time.perf_counter() - t, per * (args.imp_rounds + 1),
                       {"log": ctx.log["imp"], "round_epochs": per})
            elif row == "colt":
                per = args.round_epochs or max(1, E // 3)
                ctx = ctx_for(cfg(per))
                p = {"sparsity": sp, "rate": args.colt_rate}
                model = METHODS.get("prune.colt")().apply(base, from_dict(METHODS.params("prune.colt"), p, "c"), ctx)
                cycles = len(ctx.log["colt"]["cycles"])
                finish("prune.colt", sp, model, time.perf_counter() - t, per * (cycles + 1),
                       {"log": ctx.log["colt"], "round_epochs": per})
            elif row in ("set", "rigl", "agent"):
                name = "prune.set" if row == "set" else "prune.rigl"
                p = {"sparsity": sp, "distribution": "erk"}
                if row != "set":
                    p["delta_t"] = args.delta_t
                if row == "agent":
                    p["agent"] = True
                ctx = ctx_for(cfg(E))
                model = METHODS.get(name)().apply(base, from_dict(METHODS.params(name), p, row), ctx)
                label = "prune.rigl+agent" if row == "agent" else name
                finish(label, sp, model, time.perf_counter() - t, E,
                       {"updates": len(ctx.log[name]["updates"]), "agent_tau": ctx.log[name].get("agent_tau")})
            else:
                raise ValueError(f"unknown row {row!r}")


if __name__ == "__main__":
    main()
