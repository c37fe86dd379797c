"""Bring your own model, end to end through ``sturdynet run``: the example's MobileNetV2-style
network (trained by its own plain-PyTorch script, loaded from a state_dict), a ResNet-18-style
network with basic blocks and a 1x1 downsampling shortcut, and a network with channel
concatenation and squeeze-excitation -- each with pruned, quantized and binarized variants
and the check battery; structured pruning physically shrinks each (params and MACs)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from sturdynet.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_model"

VARIANTS = [{"name": "dense"}, {"name": "pruned", "method": "prune.structured", "amount": 0.5},
            {"name": "int8", "method": "quant.uniform", "bits": 8}, {"name": "int4", "method": "quant.uniform", "bits": 4},
            {"name": "binary", "method": "binarize"}]
CHECKS = [{"check": "clean"},
          {"check": "robust", "eps": 0.1, "samples": 12, "steps": 3, "n_queries": 20},
          {"check": "bfa", "samples": 30, "trials": 1, "max_flips": 2, "attack_batch": 16, "random_baseline": False},
          {"check": "ber", "samples": 30, "trials": 1, "rates": [0.001]},
          {"check": "corruptions", "samples": 12, "corruptions": ["gaussian_noise", "contrast"], "severities": [2]}]


def _run(tmp_path, recipe: dict) -> dict:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["-q", "run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")]) == 0
    return json.loads((tmp_path / "out" / "results.json").read_text())


def _check_results(res: dict) -> None:
    by = {v["name"]: v for v in res["variants"]}
    assert all(v["status"] == "ok" for v in by.values()), {k: v.get("error") for k, v in by.items()}
    assert set(by["dense"]["metrics"]) == {c["check"] for c in CHECKS}
    assert by["pruned"]["params_count"] < 0.7 * by["dense"]["params_count"]
    assert by["pruned"]["macs"] < 0.7 * by["dense"]["macs"]
    assert by["pruned"]["method_log"]["prune.structured"]["engine"] == "graph"
    assert by["int4"]["size_bytes"] < by["int8"]["size_bytes"] < by["dense"]["size_bytes"]


@pytest.mark.parametrize("factory", ["resnet_basic", "concat_se"])
def test_test_architectures_through_run(tmp_path, factory):
    res = _run(tmp_path, {"name": factory, "data": {"name": "digits", "subset": {"train": 300, "test": 40}},
                          "model": {"factory": f"byo_nets:{factory}", "kwargs": {"width": 8}},
                          "train": {"epochs": 2, "batch_size": 64}, "variants": VARIANTS, "evaluate": CHECKS})
    _check_results(res)
    assert "not known to normalize" in res["warnings"][0]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "not known to normalize" in report and "| MACs |" in report
    pruned = next(v for v in res["variants"] if v["name"] == "pruned")
    assert f"{pruned['macs']:,}" in report and f"{pruned['params_count']:,}" in report


def test_example_own_model_end_to_end(tmp_path, monkeypatch):
    """train.py (plain PyTorch, 2 epochs) -> state_dict -> the example recipe, reduced."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("net", None)
    import train as example_train

    assert example_train.main(["--out-dir", str(tmp_path), "--epochs", "2"]) == 0
    recipe = yaml.safe_load((EXAMPLE / "recipe.yaml").read_text())
    recipe["data"]["path"] = str(tmp_path / "digits_split.npz")
    recipe["data"]["subset"] = {"train": 300, "test": 40}
    recipe["model"]["weights"] = str(tmp_path / "net_digits.pt")
    names = [v["method"] for v in recipe["variants"] if "method" in v]
    assert names == ["quant.uniform", "quant.uniform", "prune.structured", "binarize"]
    assert [c["check"] for c in recipe["evaluate"]] == [c["check"] for c in CHECKS]
    recipe["variants"], recipe["evaluate"] = VARIANTS, CHECKS
    res = _run(tmp_path, recipe)
    _check_results(res)
    assert res["base"]["history"] == []  # given weights: no base training
    assert "warnings" not in res  # normalization declared
