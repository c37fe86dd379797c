"""The exact BFA chooses bit for bit what the full-forward progressive bit search chose
(recorded in tests/data/bfa_reference.json before activation caching; see tests/bfa_cases.py)."""
from __future__ import annotations

import json

import pytest
import torch

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


def test_fast_search_raises_the_loss_at_every_step_and_measures_fewer_candidates():
    from sturdynet.faults import BitFlipAttack

    x, held = bfa_cases.batches()
    name, model, kw = bfa_cases.cases()[3]  # quantized convs only: many layers to rank
    exact = BitFlipAttack(target_accuracy=0.0, **kw).run(model, x, held, 10)
    fast = BitFlipAttack(target_accuracy=0.0, search="fast", fast_top=2, **kw).run(model, x, held, 10)
    assert fast.flips == exact.flips and not fast.stalled
    losses = [p["loss"] for p in fast.curve]
    assert all(b > a for a, b in zip(losses, losses[1:]))
    assert fast.evaluations < exact.evaluations


def test_suffix_cache_off_gives_the_same_choices():
    from sturdynet.faults import BitFlipAttack

    x, held = bfa_cases.batches()
    name, model, kw = bfa_cases.cases()[0]
    a = BitFlipAttack(target_accuracy=0.0, cache=False, **kw).run(model, x, held, 10)
    b = BitFlipAttack(target_accuracy=0.0, **kw).run(model, x, held, 10)
    assert a.history == b.history and a.curve == b.curve


def test_data_as_tuple_loader_and_callback():
    from torch.utils.data import DataLoader, TensorDataset

    from sturdynet.faults import BitFlipAttack

    x, held = bfa_cases.batches()
    name, model, kw = bfa_cases.cases()[0]
    seen = []
    atk = BitFlipAttack(k_top=5, max_flips=3, target_accuracy=0.0)
    a = atk.run(model, x, (held.x, held.y), 10, callback=seen.append)
    loader = DataLoader(TensorDataset(held.x, held.y), batch_size=16)
    b = atk.run(model, DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=7), loader, 10)
    assert a.history == b.history and a.curve == b.curve
    assert [e["flips"] for e in seen] == [1, 2, 3] and all("balanced_accuracy" in e for e in seen)
    stop = atk.run(model, x, held, 10, callback=lambda e: True)
    assert stop.flips == 1
    with pytest.raises(ValueError, match="held_out"):
        atk.run(model, x, held.x, 10)
