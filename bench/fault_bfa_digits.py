"""BFA, random flips, BER and the fault defenses on digits / small_cnn (one CPU thread, ~minutes).

Usage:
    OMP_NUM_THREADS=1 python bench/fault_bfa_digits.py bench/logs/fault_bfa_digits.json \
        > bench/logs/fault_bfa_digits.log 2>&1
"""
from __future__ import annotations

import copy
import json
import sys
import time

import torch

from sturdynet.core.method import MethodContext
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.data import load_data
from sturdynet.checks.base import CheckContext
from sturdynet.faults import deploy
from sturdynet.faults.common import accuracy
from sturdynet.models import model_for_data
from sturdynet.core.registry import CHECKS, DATASETS, METHODS, MODELS
from sturdynet.train import TrainConfig, fit


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "bench/logs/fault_bfa_digits.json"
    data = load_data(Component("digits", from_dict(DATASETS.params("digits"), {})), seed=0)
    torch.manual_seed(0)
    model = model_for_data(Component("small_cnn", from_dict(MODELS.params("small_cnn"), {"width": 16})), data)
    cfg = TrainConfig(epochs=15, lr=0.05, batch_size=64)
    fit(model, data, cfg, seed=0)
    model.eval()
    ctx = training_context(data, cfg, seed=0)
    cctx = CheckContext(seed=0)
    res = {"budget": {"data": "digits (1294 train / 144 val / 359 test)", "model": "small_cnn width 16",
                      "epochs": 15, "attack_batch": 64, "trials": 10, "threads": 1},
           "dense": {"float_accuracy": accuracy(model, data.test), "int8_accuracy": accuracy(deploy(model), data.test)}}
    log("dense", res["dense"])

    def bfa(m, key, **kw):
        p = from_dict(CHECKS.params("bfa"), {"trials": 10, "attack_batch": 64, "max_flips": 300, **kw})
        r = CHECKS.get("bfa")(m, data, p, cctx)
        for t in r["trials"]:
            t.pop("curve", None)
        res[key] = r
        log(key, r["flips_to_random"], "s/flip %.4f" % r["seconds_per_flip"], "random", r["random_baseline"],
            "clean", r["clean_accuracy"])

    bfa(model, "bfa_int8")
    bfa(model, "bfa_int4", bits=4)
    p = from_dict(CHECKS.params("random_flips"), {"flips": [1, 10, 100, 1000], "trials": 10})
    res["random_flips_int8"] = CHECKS.get("random_flips")(model, data, p, cctx)
    log("random", [(c["flips"], round(c["accuracy"], 3)) for c in res["random_flips_int8"]["curve"]])

    bp = from_dict(METHODS.params("binarize"), {"activations": False, "epochs": 10, "lr": 0.01})
    binary = METHODS.get("binarize")().apply(model, bp, copy.copy(ctx)).eval()
    res["binary"] = {"accuracy": accuracy(binary, data.test)}
    log("binary", res["binary"])
    bfa(binary, "bfa_binary")
    bfa(binary, "bfa_binary_only", float_layers="skip")

    cp = from_dict(METHODS.params("faults.clustering"), {"epochs": 10, "strength": 0.3, "lr": 0.01})
    clustered = METHODS.get("faults.clustering")().apply(model, cp, copy.copy(ctx)).eval()
    res["clustering"] = {"float_accuracy": accuracy(clustered, data.test),
                         "int8_accuracy": accuracy(deploy(clustered), data.test)}
    log("clustering", res["clustering"])
    bfa(clustered, "bfa_clustering")
    ft = copy.deepcopy(model)
    fit(ft, data, TrainConfig(epochs=10, lr=0.005, batch_size=64), seed=0)  # same fine-tuning, no penalty
    bfa(ft.eval(), "bfa_finetuned_control")

    for fmt, rates in (("int", [1e-4, 1e-3, 1e-2, 3e-2]), ("float32", [1e-6, 1e-5, 1e-4, 1e-3]),
                       ("float16", [1e-6, 1e-5, 1e-4, 1e-3])):
        p = from_dict(CHECKS.params("ber"), {"rates": rates, "trials": 10, "float_layers": fmt})
        res[f"ber_{fmt}"] = CHECKS.get("ber")(model, data, p, cctx)
        log("ber", fmt, [(c["ber"], round(c["accuracy"], 3)) for c in res[f"ber_{fmt}"]["curve"]])
    p = from_dict(CHECKS.params("ber"), {"rates": [1e-4, 1e-3, 1e-2, 3e-2], "trials": 10, "float_layers": "skip"})
    res["ber_binary_only"] = CHECKS.get("ber")(binary, data, p, cctx)
    log("ber binary", [(c["ber"], round(c["accuracy"], 3)) for c in res["ber_binary_only"]["curve"]])

    t0 = time.perf_counter()
    cp = from_dict(METHODS.params("faults.clipact"), {"rates": [1e-5, 3e-5, 1e-4], "trials": 3})
    c = MethodContext(data=data, seed=0)
    clipped = METHODS.get("faults.clipact")().apply(model, cp, c)
    res["clipact"] = {"search_seconds": time.perf_counter() - t0, "accuracy": accuracy(clipped, data.test),
                      "thresholds": c.log["clipact"]["thresholds"], "act_max": c.log["clipact"]["act_max"]}
    p = from_dict(CHECKS.params("ber"), {"rates": [1e-6, 1e-5, 1e-4, 1e-3], "trials": 10, "float_layers": "float32"})
    res["ber_float32_clipact"] = CHECKS.get("ber")(clipped, data, p, cctx)
    log("clipact", res["clipact"]["accuracy"],
        [(x["ber"], round(x["accuracy"], 3)) for x in res["ber_float32_clipact"]["curve"]])
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    log("done")


if __name__ == "__main__":
    main()
