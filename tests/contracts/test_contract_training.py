"""Contract of every training callback (``CALLBACKS``) and adversarial-training method
(``ADVERSARIAL``).

For each name: a recipe-style training config naming the component (``callbacks: [...]``
or ``adversarial: {...}``) trains a tiny model for one short epoch; the history holds one
row with a finite training loss and the weights have moved.

To extend: a new entry runs with its default parameters on a copy of the tiny mlp. When it
needs smaller parameters or a model of a kind (binary weights, masks, growth gates), add a
row to ``CALLBACK_CASES`` / ``ADVERSARIAL_CASES``: ``"params"`` and ``"model"`` (a key of
``MODELS_FOR_TESTS``), both optional.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable, Dict

import pytest
import torch
from torch import nn

from sturdynet.core.params import Component
from sturdynet.core.registry import ADVERSARIAL, CALLBACKS, METHODS
from sturdynet.models.common import build_model
from sturdynet.quant.binary.ra_bnn import GumbelSigmoidGate
from sturdynet.train import fit

from contract_helpers import TINY_TRAIN, assert_covers, same_state, state_of

CALLBACK_CASES: Dict[str, Dict[str, Any]] = {
    "agent": {"model": "masked"},
    "early_bird": {"params": {"window": 1}},
    "ovsw": {"model": "binary"},
    "ra_bnn_penalty": {"model": "gated"},
    "reste_anneal": {"model": "binary"},
    "rigl": {"params": {"delta_t": 2}, "model": "masked"},
    "set": {"params": {"interval": 2}, "model": "masked"},
    "sign_flips": {"model": "binary"},
}

ADVERSARIAL_CASES: Dict[str, Dict[str, Any]] = {
    "part": {"params": {"steps": 1}, "model": "cnn"},  # its Grad-CAM weighting needs a conv layer
    "pgd": {"params": {"steps": 1}},
    "trades": {"params": {"steps": 1}},
}


def _binary(mlp: nn.Module) -> nn.Module:
    return METHODS.get("binarize")().prepare(mlp, METHODS.validate("binarize", {"estimator": "reste"}))


def _masked(mlp: nn.Module) -> nn.Module:
    return METHODS.get("prune.random")().apply(mlp, METHODS.validate("prune.random", {"sparsity": 0.5}))


def _gated(_: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    m = build_model("bireal_resnet20", 1, 10, (8, 8), width=4)
    m.set_gates([GumbelSigmoidGate(w, w // 2) for w in m.widths])
    return m


def _cnn(_: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", 1, 10, (8, 8), width=4)


#: model kinds a case may ask for, built from the tiny mlp
MODELS_FOR_TESTS: Dict[str, Callable[[nn.Module], nn.Module]] = {
    "mlp": copy.deepcopy, "binary": _binary, "masked": _masked, "gated": _gated, "cnn": _cnn,
}

CALLBACK_NAMES = CALLBACKS.names()
ADVERSARIAL_NAMES = ADVERSARIAL.names()
COVERS = {"callbacks": CALLBACK_NAMES, "adversarial": ADVERSARIAL_NAMES}  # read by test_contract_coverage.py


def test_contract_covers_every_callback_and_adversarial_method():
    assert_covers(CALLBACKS, CALLBACK_NAMES, CALLBACK_CASES)
    assert_covers(ADVERSARIAL, ADVERSARIAL_NAMES, ADVERSARIAL_CASES)
    for case in [*CALLBACK_CASES.values(), *ADVERSARIAL_CASES.values()]:
        assert case.get("model", "mlp") in MODELS_FOR_TESTS


def _one_epoch(model: nn.Module, cfg: Any, data: Any) -> None:
    before = state_of(model)
    history = fit(model, data, cfg, seed=0)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert not same_state(before, state_of(model)), "one epoch of training changed no weight"


@pytest.mark.parametrize("name", CALLBACK_NAMES)
def test_callback_trains_one_epoch(name, tiny_mlp, tiny_data):
    case = CALLBACK_CASES.get(name, {})
    model = MODELS_FOR_TESTS[case.get("model", "mlp")](tiny_mlp)
    comp = Component(name, CALLBACKS.validate(name, case.get("params", {}), f"CALLBACK_CASES[{name!r}]"))
    _one_epoch(model, dataclasses.replace(TINY_TRAIN, callbacks=(comp,)), tiny_data)


@pytest.mark.parametrize("name", ADVERSARIAL_NAMES)
def test_adversarial_method_trains_one_epoch(name, tiny_mlp, tiny_data):
    case = ADVERSARIAL_CASES.get(name, {})
    model = MODELS_FOR_TESTS[case.get("model", "mlp")](tiny_mlp)
    comp = Component(name, ADVERSARIAL.validate(name, case.get("params", {}), f"ADVERSARIAL_CASES[{name!r}]"))
    _one_epoch(model, dataclasses.replace(TINY_TRAIN, adversarial=comp), tiny_data)
