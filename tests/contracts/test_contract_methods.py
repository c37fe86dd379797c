"""Contract of every registered compression method (``METHODS``).

For each name: ``apply`` builds a variant of a tiny model without touching the model it
was given, the variant's forward pass is valid (finite logits of the right shape), and
``prepare`` (or ``prepare_for_state`` with the variant's state_dict) builds a structure that
the variant's state_dict loads into, strictly, computing the same logits. A method that
trains (``trains = True``) refuses to run without a ``TrainingContext`` (TypeError naming
``ctx``); a transform runs with a ``MethodContext`` holding calibration data.

To extend: a new method is tested with its default parameters on the tiny mlp. When the
defaults are too slow or the method needs another model, add a row to ``CASES``:
``"name": {"params": {...}, "model": "<key of MODELS_FOR_TESTS>"}`` (both optional).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import pytest
import torch
from torch import nn

from sturdynet.core.method import MethodContext, TrainingContext
from sturdynet.core.registry import METHODS
from sturdynet.models.common import build_model
from sturdynet.train.context import training_context

from contract_helpers import TINY_TRAIN, assert_covers, same_state, state_of

#: per-name overrides: fewer epochs/rounds/trials than the defaults, or a model the method needs
CASES: Dict[str, Dict[str, Any]] = {
    "binarize": {"params": {"epochs": 1}},
    "binarize.bireal": {"params": {"epochs": 1}, "model": "resnet20"},
    "distill": {"params": {"teacher_epochs": 1, "student_epochs": 1}},
    "faults.clipact": {"params": {"rates": [1e-3], "trials": 1, "iterations": 1, "min_iterations": 1,
                                  "samples": 32}},
    "faults.clustering": {"params": {"epochs": 1}},
    "prune.colt": {"params": {"sparsity": 0.5, "rate": 0.5, "epochs": 1, "final_epochs": 1}},
    "prune.fine_pruning": {"params": {"epochs": 1, "samples": 32}, "model": "cnn"},
    "prune.hydra": {"params": {"score_epochs": 1}},
    "prune.imp": {"params": {"rounds": 1, "rate": 0.5, "epochs": 1}},
    "prune.rigl": {"params": {"epochs": 1, "delta_t": 2}},
    "prune.robust_ticket": {"params": {"rounds": 1, "rate": 0.5, "epochs": 1, "early_bird": False,
                                       "adversarial": {"method": "fgsm_rs", "eps": 0.1}}},
    "prune.set": {"params": {"epochs": 1, "interval": 2}},
    "prune.structured": {"model": "cnn"},
    "quant.fixed_point": {"params": {"act_bits": 8, "calib_samples": 32}},
    "quant.hq": {"params": {"hs_epochs": 1, "calib_samples": 32}},
    "quant.ternary": {"params": {"calib_samples": 32}},
    "quant.uniform": {"params": {"act_bits": 8, "calib_samples": 32}},
    "ra_bnn.grow": {"params": {"grow_epochs": 1, "retrain_epochs": 1}, "model": "bireal_resnet20"},
}

#: tiny models on 1x8x8 inputs and 10 classes, by the key a CASES row names
MODELS_FOR_TESTS: Dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: build_model("small_cnn", 1, 10, (8, 8), width=4),
    "resnet20": lambda: build_model("resnet20", 1, 10, (8, 8), width=0.25),
    "bireal_resnet20": lambda: build_model("bireal_resnet20", 1, 10, (8, 8), width=4),
}

NAMES = METHODS.names()
COVERS = {"methods": NAMES}  # read by test_contract_coverage.py


def test_contract_covers_every_method():
    assert_covers(METHODS, NAMES, CASES)
    for case in CASES.values():
        assert case.get("model", "mlp") == "mlp" or case["model"] in MODELS_FOR_TESTS


def _model(name: str, tiny_mlp: nn.Module) -> nn.Module:
    key = CASES.get(name, {}).get("model", "mlp")
    if key == "mlp":
        return tiny_mlp
    torch.manual_seed(0)
    return MODELS_FOR_TESTS[key]().eval()


def _params(name: str) -> Any:
    return METHODS.validate(name, CASES.get(name, {}).get("params", {}), f"CASES[{name!r}]")


def _context(method: Any, data: Any) -> MethodContext:
    if method.trains:
        return training_context(data, TINY_TRAIN, seed=0)
    return MethodContext(data=data, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_method_builds_a_valid_variant_and_its_structure_loads_it(name, tiny_mlp, tiny_data):
    model = _model(name, tiny_mlp)
    params = _params(name)
    before, mode = state_of(model), model.training
    method = METHODS.get(name)()
    ctx = _context(method, tiny_data)
    out = method.apply(model, params, ctx)
    assert isinstance(out, nn.Module)
    assert same_state(before, state_of(model)) and model.training == mode, "apply changed its input model"
    x = tiny_data.test.x[:8]
    out.eval()
    with torch.no_grad():
        y = out(x)
    assert y.shape == (8, tiny_data.num_classes) and torch.isfinite(y).all()
    state = out.state_dict()
    shell = method.prepare_for_state(model, params, state)
    assert same_state(before, state_of(model)), "prepare changed its input model"
    shell.load_state_dict(state)  # strict: the same names and shapes
    shell.eval()
    with torch.no_grad():
        torch.testing.assert_close(shell(x), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).trains])
def test_training_method_requires_a_training_context(name, tiny_mlp, tiny_data):
    method = METHODS.get(name)()
    with pytest.raises(TypeError, match="ctx"):
        method.apply(_model(name, tiny_mlp), _params(name))
    with pytest.raises(TypeError, match=f"{name}.*TrainingContext"):
        method.apply(_model(name, tiny_mlp), _params(name), MethodContext(data=tiny_data))


def test_former_context_name_points_to_the_training_context(tiny_data):
    from sturdynet.core.method import CompressContext

    assert CompressContext(data=tiny_data, seed=2).seed == 2
    with pytest.raises(TypeError, match="training_context"):
        CompressContext(data=tiny_data, train=TINY_TRAIN, fit=lambda *a, **k: [])


def test_training_context_requires_its_fields(tiny_data):
    with pytest.raises(TypeError, match="fit"):
        TrainingContext(data=tiny_data, train=TINY_TRAIN, finetune_config=lambda *a: None)
    ctx = training_context(tiny_data, TINY_TRAIN, seed=3)
    cfg = ctx.finetune(2, {"batch_size": 16})
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.warmup_epochs) == (2, TINY_TRAIN.lr * 0.1, 16, 0.0)
