"""FT-ClipAct per call site against the former module-only clipping, on a network whose
blocks call ``torch.relu`` (tests/byo_nets.py resnet_basic, width 8, digits, 3 model seeds; one CPU thread, ~1 minute).

The former ``faults.clipact`` replaced ``nn.ReLU`` modules only: on this net that is the
stem's single ReLU, the eight ``torch.relu`` calls in the blocks stayed unclipped. Both
variants run the same profiling and interval search (same rates, trials, seed); they are
then evaluated under float32 weight BER on the test split with fresh fault seeds.

Usage:
    OMP_NUM_THREADS=1 PYTHONPATH=src:tests python bench/clipact_sites_digits.py \
        bench/results/clipact_sites_digits.json > bench/logs/clipact_sites_digits.log 2>&1
"""
from __future__ import annotations

import copy
import json
import sys
import time

import torch

import byo_nets
from sturdynet.core.method import MethodContext
from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import DATASETS, METHODS
from sturdynet.data import load_data
from sturdynet.defenses.clipact import ClipAct, profile_max, replace_relus
from sturdynet.faults import BitErrors
from sturdynet.faults.common import accuracy
from sturdynet.train import TrainConfig, fit

RATES = (3e-5, 1e-4, 3e-4)
TRIALS = 10
SEEDS = (0, 1, 2)


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def module_only(model, params, data, seed):
    """The former method: nn.ReLU modules replaced, the same profiling and search."""
    m = copy.deepcopy(model).eval()
    layers = [n for n, _ in replace_relus(m)]
    split = (data.val if len(data.val) else data.train).take(params.samples)
    act_max = profile_max(m, split, params.batch_size)
    for n in layers:
        m.get_submodule(n).threshold.fill_(act_max[n])
    return m, ClipAct().search(m, layers, act_max, split, params, seed)


def ber_curve(model, data):
    out = []
    for r in RATES:
        accs = [accuracy(BitErrors(r, float_layers="float32").inject(model, torch.Generator().manual_seed(1000 + t))[0],
                         data.test) for t in range(TRIALS)]
        mean = sum(accs) / len(accs)
        out.append({"ber": r, "accuracy": mean,
                    "std": (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5})
    return out


def one_seed(data, params, seed: int) -> dict:
    torch.manual_seed(seed)
    model = byo_nets.resnet_basic(width=8)
    fit(model, data, TrainConfig(epochs=8, lr=0.05, batch_size=64), seed=seed)
    model.eval()
    res = {"base": {"clean": accuracy(model, data.test), "ber": ber_curve(model, data)}}
    t0 = time.perf_counter()
    old, old_log = module_only(model, params, data, seed)
    res["module_only"] = {"sites": len(old_log["thresholds"]), "search_seconds": time.perf_counter() - t0,
                          "clean": accuracy(old, data.test), "ber": ber_curve(old, data)}
    ctx = MethodContext(data=data, seed=seed)
    t0 = time.perf_counter()
    new = ClipAct().apply(model, params, ctx)
    res["per_site"] = {"sites": ctx.log["clipact"]["coverage"]["sites"], "search_seconds": time.perf_counter() - t0,
                       "clean": accuracy(new, data.test), "ber": ber_curve(new, data),
                       "coverage": ctx.log["clipact"]["coverage"]}
    for k in ("base", "module_only", "per_site"):
        log(seed, k, round(res[k]["clean"], 3), [round(c["accuracy"], 3) for c in res[k]["ber"]])
    return res


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "bench/logs/clipact_sites_digits.json"
    data = load_data(Component("digits", from_dict(DATASETS.params("digits"), {})), seed=0)
    params = from_dict(METHODS.params("faults.clipact"), {"rates": [1e-4, 3e-4], "trials": 2, "iterations": 2,
                                                          "min_iterations": 1, "samples": 144})
    res = {"budget": {"data": "digits (1294 train / 144 val / 359 test)", "model": "byo_nets.resnet_basic width 8",
                      "epochs": 8, "model_seeds": list(SEEDS),
                      "search": {"rates": [1e-4, 3e-4], "trials": 2, "iterations": 2, "samples": 144},
                      "eval": {"rates": list(RATES), "trials": TRIALS, "view": "float32"}, "threads": 1,
                      "machine": "2-core CPU shared with other jobs"},
           "seeds": {str(s): one_seed(data, params, s) for s in SEEDS}}
    res["summary"] = {k: {"clean": sum(r[k]["clean"] for r in res["seeds"].values()) / len(SEEDS),
                          "ber": {str(rate): sum(r[k]["ber"][i]["accuracy"] for r in res["seeds"].values()) / len(SEEDS)
                                  for i, rate in enumerate(RATES)}}
                      for k in ("base", "module_only", "per_site")}
    log("summary", res["summary"])
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
