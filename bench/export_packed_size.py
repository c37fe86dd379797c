"""Packed file size against its payload (issue 18 part 5): version 2 (compact header) and
the version-1 container (torch.save of the same facts), for several models and variants.

Usage: OMP_NUM_THREADS=1 python bench/export_packed_size.py --out bench/results/export_packed_size.json
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch

from sturdynet.core.method import run_steps
from sturdynet.train import TrainConfig
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, component
from sturdynet.core.registry import METHODS
from sturdynet.data import load_data
from sturdynet.data.digits import DigitsParams
from sturdynet.export import export_model, read_packed
from sturdynet.models import model_for_data
from sturdynet.models.arch import arch_of
from sturdynet.models.resnet20 import ResNet20Params
from sturdynet.models.small_cnn import SmallCNNParams

VARIANTS = {"float32": [], "int8": [{"method": "quant.uniform", "bits": 8}],
            "int4": [{"method": "quant.uniform", "bits": 4}], "ternary": [{"method": "quant.ternary"}],
            "binary": [{"method": "binarize"}],
            "pruned-90": [{"method": "prune.global_magnitude", "sparsity": 0.9}]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/export_packed_size.json")
    args = ap.parse_args()
    digits = load_data(Component("digits", DigitsParams()), seed=0)
    models = {"small_cnn w8": Component("small_cnn", SmallCNNParams(width=8)),
              "resnet8 w0.375": Component("resnet20", ResNet20Params(depth=8, width=0.375)),
              "resnet20 w0.5": Component("resnet20", ResNet20Params(width=0.5)),
              "resnet20": Component("resnet20", ResNet20Params())}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mname, spec in models.items():
            torch.manual_seed(0)
            dense = model_for_data(spec, digits).eval()
            for vname, raw in VARIANTS.items():
                steps = [component(METHODS, r, f"steps[{i}]", key="method") for i, r in enumerate(raw)]
                model = run_steps(copy.deepcopy(dense), steps, training_context(digits, TrainConfig(epochs=1), seed=0)).eval()
                path = Path(tmp) / "m.sturdy"
                info = export_model(model, path, arch_of(spec, digits, steps))
                torch.save(dict(read_packed(path), version=1), Path(tmp) / "v1.sturdy")
                v1 = (Path(tmp) / "v1.sturdy").stat().st_size
                row = {"model": mname, "params": sum(p.numel() for p in dense.parameters()), "variant": vname,
                       "payload": info["payload_bytes"], "file_v2": info["file_bytes"], "file_v1": v1,
                       "overhead_v2_pct": 100 * (info["file_bytes"] / info["payload_bytes"] - 1),
                       "overhead_v1_pct": 100 * (v1 / info["payload_bytes"] - 1), "names_stored": info["names_stored"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": "2-core CPU (sizes do not depend on it)", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
