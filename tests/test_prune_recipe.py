"""The pruners as recipe variants: one run, variant checkpoints reload exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sturdynet.core.params import ConfigError, load_yaml
from sturdynet.run.recipe import parse_recipe
from sturdynet.run.runner import run_recipe
from sturdynet.run.checkpoint import load_checkpoint

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pruning-digits.yaml"

TINY = {
    "name": "tiny-prune", "seed": 0,
    "data": {"name": "digits", "subset": {"train": 300, "test": 60}},
    "model": {"name": "small_cnn", "width": 4},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "variants": [
        {"name": "dense"},
        {"name": "gmt", "method": "prune.global_magnitude", "sparsity": 0.8, "min_threshold": 0.01},
        {"name": "layer", "method": "prune.layerwise_magnitude", "sparsity": 0.8, "finetune_epochs": 1},
        {"name": "lamp", "method": "prune.lamp", "sparsity": 0.8},
        {"name": "rand", "method": "prune.random", "sparsity": 0.8, "distribution": "erk", "seed": 2},
        {"name": "chan", "method": "prune.structured", "amount": 0.5, "finetune_epochs": 1},
    ],
    "evaluate": [{"check": "clean"}],
}


def test_example_recipe_parses():
    r = parse_recipe(load_yaml(RECIPE))
    assert {v.method for v in r.variants} >= {"prune.lamp", "prune.structured", "prune.random",
                                              "prune.layerwise_magnitude", "prune.global_magnitude"}


def test_bad_variant_parameter_names_the_field():
    bad = dict(TINY, variants=[{"name": "x", "method": "prune.random", "sparsity": 0.5, "distribution": "gauss"}])
    with pytest.raises(ConfigError, match=r"variants\[0\].distribution"):
        parse_recipe(bad)


def test_run_and_reload(tmp_path):
    res = run_recipe(parse_recipe(TINY), tmp_path)
    variants = {v["name"]: v for v in res["variants"]}
    for name in ("gmt", "layer", "lamp", "rand"):
        assert variants[name]["status"] == "ok", variants[name].get("error")
        assert variants[name]["sparsity"] == pytest.approx(0.8, abs=2e-3)
        assert variants[name]["size_bytes"] < variants["dense"]["size_bytes"]
    chan = variants["chan"]
    assert chan["status"] == "ok", chan.get("error")
    assert chan["params_count"] < variants["dense"]["params_count"]
    assert chan["method_log"]["prune.structured"]["macs_after"] < chan["method_log"]["prune.structured"]["macs_before"]
    from sturdynet.data import load_data
    from sturdynet.core.params import Component
    from sturdynet.data.digits import DigitsParams
    x = load_data(Component("digits", DigitsParams()), seed=0).test.x[:16]
    for name in ("gmt", "lamp", "chan"):
        model, blob = load_checkpoint(tmp_path / "variants" / f"{name}.safetensors")
        state = blob["state_dict"]
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
        assert torch.isfinite(model(x)).all()
