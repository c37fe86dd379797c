"""The exact BFA chooses bit for bit what the full-forward progressive bit search chose
(recorded in tests/data/bfa_reference.json before activation caching; see tests/bfa_cases.py)."""
from __future__ import annotations

import json

import pytest

import bfa_cases


@pytest.fixture(scope="module")
def now():
    return bfa_cases.record(bfa_cases.run_exact)


@pytest.mark.parametrize("case", [c for c in json.loads(bfa_cases.REFERENCE.read_text())])
def test_exact_bfa_makes_the_recorded_choices(now, case):
    ref = json.loads(bfa_cases.REFERENCE.read_text())[case]
    got = json.loads(json.dumps(now[case]))  # same float formatting as the recording
    assert got["history"] == ref["history"]  # layers, weights, bits, losses: identical
    assert got["curve"] == ref["curve"] and got["flips"] == ref["flips"] and got["stalled"] == ref["stalled"]
