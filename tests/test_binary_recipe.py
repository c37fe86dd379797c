"""Binary networks as recipe variants: one run on digits, variant checkpoints reload exactly."""
from __future__ import annotations

from pathlib import Path

import torch

from sturdynet.core.params import load_yaml
from sturdynet.run.recipe import parse_recipe
from sturdynet.run.runner import run_recipe
from sturdynet.run.checkpoint import load_checkpoint

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "binary-digits.yaml"

TINY = {
    "name": "tiny-binary", "seed": 0,
    "data": {"name": "digits", "subset": {"train": 256, "test": 60}},
    "model": {"name": "bireal_resnet20", "width": 4},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "callbacks": [{"name": "sign_flips"}]},
    "variants": [
        {"name": "bnn"},
        {"name": "reste", "method": "binarize", "estimator": "reste", "weight_estimator": "reste", "epochs": 1},
        {"name": "ovsw", "method": "binarize", "epochs": 1, "ovsw": True},
        {"name": "grown", "method": "ra_bnn.grow", "grow_epochs": 1, "retrain_epochs": 1, "init_logit": 3.0},
    ],
    "evaluate": [{"check": "clean"}],
}


def test_example_recipe_parses():
    r = parse_recipe(load_yaml(RECIPE))
    assert {v.method for v in r.variants} == {None, "binarize", "ra_bnn.grow"}
    assert r.train.callbacks[0].name == "sign_flips"


def test_run_and_reload(tmp_path):
    res = run_recipe(parse_recipe(TINY), tmp_path)
    variants = {v["name"]: v for v in res["variants"]}
    for name in ("bnn", "reste", "ovsw", "grown"):
        assert variants[name]["status"] == "ok", variants[name].get("error")
        assert variants[name]["bits"] == 1
    assert variants["reste"]["method_log"]["binarize"]["history"][-1]["reste_o"] > 1
    assert "binary_silent_fraction" in variants["ovsw"]["method_log"]["binarize"]["history"][-1]
    log = variants["grown"]["method_log"]["ra_bnn"]
    assert log["grown_widths"] == [8, 16, 32]  # every candidate channel opened (init_logit 3, small l1)
    assert variants["grown"]["params_count"] > variants["bnn"]["params_count"]
    x = torch.rand(4, 1, 8, 8)
    for name in ("reste", "ovsw", "grown"):
        model, blob = load_checkpoint(tmp_path / "variants" / f"{name}.safetensors")
        assert all(torch.equal(model.state_dict()[k], v) for k, v in blob["state_dict"].items())
        assert torch.isfinite(model(x)).all()
    assert load_checkpoint(tmp_path / "variants" / "grown.safetensors")[0].widths == (8, 16, 32)
