"""Contract of every registered input attack (``ATTACKS``).

For each name: the attack's adversarial images stay inside its eps ball (in its norm) and
in [0, 1], have the input's shape, and the attack leaves the model untouched (weights,
buffers, ``.grad``, and its train/eval flag: the model is handed over in train mode and
must come back in train mode) and the caller's images untouched.

To extend: a new attack runs with ``eps`` = ``EPS`` and its other defaults. When that is
too slow or it needs more, add a row to ``CASES``: ``"params"`` are validated against the
attack's parameter dataclass when it registers one (else passed as keyword arguments),
``"extra"`` names keyword arguments that are not parameters (``"surrogate"``: a second
tiny model).
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import pytest
import torch

from sturdynet.attacks.base import lp_norm
from sturdynet.core.params import kwargs_of
from sturdynet.core.registry import ATTACKS

from contract_helpers import assert_covers, same_state, state_of

EPS = 0.1

#: per-name overrides: fewer steps / queries than the defaults, a norm, other arguments
CASES: Dict[str, Dict[str, Any]] = {
    "apgd": {"params": {"steps": 3}},
    "apgd-t": {"params": {"steps": 3, "n_target_classes": 2}},
    "autoattack": {"params": {"steps": 2, "n_target_classes": 2, "n_queries": 10}},
    "cw": {"params": {"eps": 1.0, "steps": 3, "binary_steps": 1}},
    "fab": {"params": {"steps": 3}},
    "fab-t": {"params": {"steps": 3, "n_target_classes": 2}},
    "pgd": {"params": {"steps": 3}},
    "square": {"params": {"n_queries": 10}},
    "transfer": {"params": {"attack_kwargs": {"steps": 2}}, "extra": {"surrogate": "surrogate"}},
}

NAMES = ATTACKS.names()
COVERS = {"attacks": NAMES}  # read by test_contract_coverage.py


def test_contract_covers_every_attack():
    assert_covers(ATTACKS, NAMES, CASES)


def make_attack(name: str, model: torch.nn.Module, surrogate: torch.nn.Module) -> Any:
    """The attack ``name`` on ``model`` with ``EPS`` and its ``CASES`` row."""
    case = CASES.get(name, {})
    params = {"eps": EPS, **case.get("params", {})}
    extra = {k: surrogate if v == "surrogate" else v for k, v in case.get("extra", {}).items()}
    if ATTACKS.params(name) is None:
        return ATTACKS.get(name)(model, **params, **extra)
    return ATTACKS.get(name)(model, **{**kwargs_of(ATTACKS.validate(name, params, f"CASES[{name!r}]")), **extra})


@pytest.mark.parametrize("name", NAMES)
def test_attack_stays_in_its_ball_and_leaves_the_model_untouched(name, tiny_mlp, tiny_data):
    model = copy.deepcopy(tiny_mlp).train()
    surrogate = copy.deepcopy(tiny_mlp).eval()
    with torch.no_grad():
        for p in surrogate.parameters():
            p.mul_(0.9)
    x, y = tiny_data.test.x[:12].clone(), tiny_data.test.y[:12].clone()
    x0, y0, before = x.clone(), y.clone(), state_of(model)
    attack = make_attack(name, model, surrogate)
    adv = attack(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.isfinite(adv).all() and adv.min() >= 0 and adv.max() <= 1
    assert (lp_norm(adv - x, attack.norm) <= attack.eps + 1e-5).all(), f"outside the {attack.norm} ball"
    assert torch.equal(x, x0) and torch.equal(y, y0), "the attack changed the caller's tensors"
    assert same_state(before, state_of(model)), "the attack changed the model's weights or buffers"
    assert model.training, "the attack did not restore train mode"
    assert all(p.grad is None for p in model.parameters()), "the attack left gradients on the model"
