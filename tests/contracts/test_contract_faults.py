"""Contract of every registered fault model (``FAULTS``).

For each name: ``inject(model, generator)`` on an 8-bit quantized tiny mlp returns a faulty
model and a record; the faulty model's stored weights differ from the fault-free deployed
model's (``deploy`` with the same bit view), its structure is the same, and the model it
was given is left untouched. The same generator seed gives the same faults.

To extend: a new fault model runs with its default parameters; when those inject too few
faults into a tiny model to change it surely, add a row to ``CASES``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

import pytest
import torch

from sturdynet.core.registry import FAULTS, METHODS
from sturdynet.faults.bitview import ViewParams, deploy

from contract_helpers import assert_covers, same_state, state_of

#: per-name overrides: enough faults that a tiny model surely changes
CASES: Dict[str, Dict[str, Any]] = {
    "ber": {"rate": 1e-2},
    "random_flips": {"flips": 20},
}

NAMES = FAULTS.names()
COVERS = {"faults": NAMES}  # read by test_contract_coverage.py


def test_contract_covers_every_fault_model():
    assert_covers(FAULTS, NAMES, CASES)


@pytest.fixture(scope="module")
def int8_mlp(tiny_mlp):
    return METHODS.get("quant.uniform")().apply(tiny_mlp, METHODS.validate("quant.uniform", {"bits": 8})).eval()


@pytest.mark.parametrize("name", NAMES)
def test_fault_model_injects_and_changes_the_weights(name, int8_mlp, tiny_data):
    params = FAULTS.validate(name, CASES.get(name, {}), f"CASES[{name!r}]")
    fm = FAULTS.create(name, **dataclasses.asdict(params))
    before = state_of(int8_mlp)
    faulty, record = fm.inject(int8_mlp, torch.Generator().manual_seed(0))
    assert isinstance(record, dict)
    assert same_state(before, state_of(int8_mlp)), "inject changed the model it was given"
    view = ViewParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(ViewParams)})
    clean, bad = state_of(deploy(int8_mlp, view)), state_of(faulty)
    assert clean.keys() == bad.keys() and all(clean[k].shape == bad[k].shape for k in clean)
    assert not same_state(clean, bad), "no stored weight changed"
    again, _ = fm.inject(int8_mlp, torch.Generator().manual_seed(0))
    assert same_state(bad, state_of(again)), "the same generator seed gave other faults"
    with torch.no_grad():
        assert faulty(tiny_data.test.x[:4]).shape == (4, tiny_data.num_classes)
