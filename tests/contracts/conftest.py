"""Fixtures of the contract tests (one file per registry family, see contract_helpers.py).

Every family file parametrises its tests over ``REG.names()`` of its registry, so a newly
registered entry is tested with its default parameters without touching the tests; a
per-name table at the top of each file shrinks the defaults (fewer steps, samples, epochs)
or picks another tiny model. Each file's coverage test fails when the parametrisation
misses a registered name or the table names an entry that no longer exists, and
``test_contract_coverage.py`` fails when a registry has no contract file.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sturdynet.core.params import Component
from sturdynet.models import model_for_data
from sturdynet.models.mlp import MLPParams
from sturdynet.train import TrainConfig, fit


@pytest.fixture(scope="session")
def tiny_data(digits):
    """8x8 digits cut to 128 train / 32 val / 32 test samples."""
    return dataclasses.replace(digits, train=digits.train.take(128), val=digits.val.take(32),
                               test=digits.test.take(32))


@pytest.fixture(scope="session")
def tiny_mlp(digits):
    """An mlp (hidden layers 32, 32) trained 3 epochs on digits (about 90% test accuracy), eval mode."""
    torch.manual_seed(0)
    model = model_for_data(Component("mlp", MLPParams(hidden=(32, 32))), digits)
    fit(model, digits, TrainConfig(epochs=3, batch_size=64, lr=0.1, eval_every=0), seed=0)
    return model.eval()
