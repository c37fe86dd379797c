"""Contract of every registered check (``CHECKS``).

For each name: the check runs on the tiny mlp and a few digits test images and returns
metrics that are JSON-serialisable and hold the documented keys: ``accuracy`` in [0, 1];
when present, ``per_sample`` (0/1 per sample, mean = ``accuracy``), ``curve`` (a list of
points) and ``flags`` (a list of strings). The model it checks is left untouched.

To extend: a new check runs with its default parameters plus ``samples`` (when it has
that field). When that is too slow, add a row to ``CASES`` with smaller parameters
(fewer steps, trials, queries, rates).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict

import pytest

from sturdynet.checks.base import CheckContext
from sturdynet.core.registry import CHECKS

from contract_helpers import assert_covers, same_state, state_of

SAMPLES = 16

#: per-name overrides of the check's defaults (``samples`` is added where the check has it)
CASES: Dict[str, Dict[str, Any]] = {
    "apgd": {"steps": 3, "n_target_classes": 2},
    "ber": {"rates": [1e-3], "trials": 1},
    "bfa": {"trials": 1, "max_flips": 2, "attack_batch": 16, "k_top": 2, "random_baseline": False,
            "accuracy_at": 1},
    "certify": {"n0": 8, "n": 16, "batch_size": 64},
    "corruptions": {"corruptions": ["gaussian_noise", "brightness"], "severities": [1]},
    "cw": {"steps": 3, "binary_steps": 1},
    "fab": {"steps": 3},
    "pgd": {"steps": 2},
    "random_flips": {"flips": [1], "trials": 1},
    "robust": {"steps": 2, "n_target_classes": 2, "n_queries": 10},
    "square": {"n_queries": 10},
    "transfer": {"steps": 2},
}

NAMES = CHECKS.names()
COVERS = {"checks": NAMES}  # read by test_contract_coverage.py


def test_contract_covers_every_check():
    assert_covers(CHECKS, NAMES, CASES)


def _params(name: str) -> Any:
    pcls = CHECKS.params(name)
    given = dict(CASES.get(name, {}))
    if pcls is not None and "samples" in {f.name for f in dataclasses.fields(pcls)}:
        given.setdefault("samples", SAMPLES)
    return CHECKS.validate(name, given, f"CASES[{name!r}]")


@pytest.mark.parametrize("name", NAMES)
def test_check_returns_the_documented_metrics(name, tiny_mlp, tiny_data):
    before = state_of(tiny_mlp)
    ctx = CheckContext(seed=0, models={"dense": tiny_mlp}, variant="dense")
    m = CHECKS.get(name)(tiny_mlp, tiny_data, _params(name), ctx)
    assert isinstance(m, dict)
    json.dumps(m)  # JSON-serialisable as the runner stores it
    assert 0.0 <= m["accuracy"] <= 1.0
    if "per_sample" in m:
        ps = m["per_sample"]
        assert ps and set(ps) <= {0, 1}
        assert m["accuracy"] == pytest.approx(sum(ps) / len(ps), abs=1e-6)
    if "curve" in m:
        assert isinstance(m["curve"], list) and all(isinstance(p, dict) for p in m["curve"])
    if "flags" in m:
        assert isinstance(m["flags"], list) and all(isinstance(f, str) for f in m["flags"])
    assert same_state(before, state_of(tiny_mlp)) and not tiny_mlp.training, "the check changed the model"
