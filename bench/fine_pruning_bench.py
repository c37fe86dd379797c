"""Fine-Pruning (arXiv 1805.12185) on a BadNets backdoor (digits): attack success rate (ASR) after
pruning, after fine-tuning, and which fine-tuning setting brings the backdoor back.

Per seed: ``recipes/backdoor-digits.yaml`` (small_cnn width 16, 15 epochs, 10% BadNets
checkerboard -> 0) trains the backdoored base; then on the clean validation split (144 images),
for each accuracy limit ``max_accuracy_drop`` in ``--drops``:

- ``pruned_<d>``: Fine-Pruning's pruning step alone;
- ``fp_<d>``: pruning + the method's fine-tuning (``--epochs`` at lr/10 = 0.005, batch-norm
  statistics re-estimated on the clean data: the defaults);

and at the first limit only:

- ``fp_bn_frozen``: the same fine-tuning with the batch-norm statistics frozen (``bn_stats: frozen``);
- ``fp_lr_low``: fine-tuning at lr 0.0005 (a hundredth of the base lr);
- ``bn_only``: pruning + re-estimating batch-norm statistics on the clean data, no weight update;
- ``ft_only``: fine-tuning without pruning (the paper's other baseline).

Usage::

    python bench/fine_pruning_bench.py --seeds 0 1 2 3 4 5 6 7 --out bench/results/fine_pruning_digits.json
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from sturdynet.core.stats import mean_std
from sturdynet.train.context import training_context
from sturdynet.core.params import from_dict, load_yaml
from sturdynet.core.tensors import predict
from sturdynet.data import load_data
from sturdynet.data.poison import poisoning_of, spec_of
from sturdynet.data.trigger import apply_trigger
from sturdynet.defenses.fine_pruning import FinePruning, FinePruningParams
from sturdynet.models import model_for_data
from sturdynet.run.recipe import parse_recipe
from sturdynet.train.loop import evaluate_accuracy, fit

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "backdoor-digits.yaml"


def asr(model, data) -> float:
    spec = spec_of(poisoning_of(data))
    v = spec.victims(data.test.y)
    x, y = data.test.x[v], data.test.y[v]
    pred = predict(model, apply_trigger(x, spec), 512).argmax(1)
    return float((pred == spec.relabel(y, data.num_classes)).float().mean())


def measure(model, data) -> dict:
    return {"clean": evaluate_accuracy(model, data.test)["accuracy"], "asr": asr(model, data)}


def run_seed(seed: int, args) -> dict:
    raw = load_yaml(RECIPE)
    raw["seed"] = seed
    recipe = parse_recipe(raw)
    data = load_data(recipe.data, seed)
    torch.manual_seed(seed)
    base = model_for_data(recipe.model, data)
    fit(base, data, recipe.train, seed=seed)
    out = {"seed": seed, "base": measure(base, data)}

    def ctx():
        return training_context(data, recipe.train, seed=seed)

    def fp(**kw):
        p = from_dict(FinePruningParams, {"epochs": args.epochs, **kw})
        c = ctx()
        m = FinePruning().apply(base, p, c)
        return m, c.log["prune.fine_pruning"]

    for i, drop in enumerate(args.drops):
        m, rep = fp(epochs=0, max_accuracy_drop=drop)
        out[f"pruned_{drop}"] = {**measure(m, data), "channels_pruned": rep["channels_pruned"]}
        if i == 0:
            bn = copy.deepcopy(m)
            bn.train()
            with torch.no_grad():
                for _ in range(args.epochs):
                    bn(data.val.x)
            out["bn_only"] = measure(bn.eval(), data)
        m, rep = fp(max_accuracy_drop=drop)
        out[f"fp_{drop}"] = measure(m, data)
    d0 = args.drops[0]
    out["fp_bn_frozen"] = measure(fp(max_accuracy_drop=d0, bn_stats="frozen")[0], data)
    out["fp_lr_low"] = measure(fp(max_accuracy_drop=d0, lr=0.0005)[0], data)
    out["ft_only"] = measure(fp(amount=0.0)[0], data)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--drops", type=float, nargs="+", default=[0.04, 0.1])
    ap.add_argument("--out", default="bench/logs/fine_pruning_digits.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for s in args.seeds:
        rows.append(run_seed(s, args))
        print(json.dumps(rows[-1]), flush=True)
    res = {"args": vars(args), "machine": "2-core CPU shared by 8 engineers (loaded), 1 torch thread",
           "seconds": time.perf_counter() - t0, "rows": rows, "summary": {}}
    for k in rows[0]:
        if k == "seed":
            continue
        for metric in ("clean", "asr"):
            vals = [r[k][metric] for r in rows]
            res["summary"][f"{k}_{metric}"] = mean_std(vals)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
