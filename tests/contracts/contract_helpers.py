"""Helpers of the contract tests (imported by the test files; fixtures live in conftest.py)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

import torch
from torch import nn

from sturdynet.train import TrainConfig

#: what every contract test trains with (one short epoch, no validation pass)
TINY_TRAIN = TrainConfig(epochs=1, batch_size=32, lr=0.05, eval_every=0)


def assert_covers(registry: Any, names: Iterable[str], table: Mapping[str, Any] = {}) -> None:
    """The parametrisation ``names`` is exactly the registry's names, and the per-name
    override ``table`` names no entry that is not registered."""
    have, want = set(names), set(registry.names())
    assert have == want, f"{registry.kind}: untested {sorted(want - have)}, stale {sorted(have - want)}"
    stale = set(table) - want
    assert not stale, f"{registry.kind}: the override table names unregistered {sorted(stale)}"


def state_of(model: nn.Module) -> Dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
