"""Shared fixtures: the digits data set and a small trained CNN (built once per session)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sturdynet.core.params import Component  # noqa: E402
from sturdynet.data import load_data  # noqa: E402
from sturdynet.data.digits import DigitsParams  # noqa: E402
from sturdynet.models import model_for_data  # noqa: E402
from sturdynet.models.small_cnn import SmallCNNParams  # noqa: E402
from sturdynet.train import TrainConfig, fit  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits, seed 0 (1294 train / 144 val / 359 test)."""
    return load_data(Component("digits", DigitsParams()), seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A small_cnn (width 8) trained 6 epochs on digits: about 97% test accuracy."""
    torch.manual_seed(0)
    model = model_for_data(Component("small_cnn", SmallCNNParams(width=8)), digits)
    fit(model, digits, TrainConfig(epochs=6, lr=0.05, batch_size=64), seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def fit_on_digits(digits):
    """Factory ``(model, epochs) -> (model, x, y, clean)``: trains ``model`` on digits (lr 0.05,
    seed 0), puts it in eval mode and returns the test images, labels and the mask of the
    correctly classified ones; clean accuracy must exceed 90%."""

    def make(model: torch.nn.Module, epochs: int):
        fit(model, digits, TrainConfig(epochs=epochs, lr=0.05), seed=0)
        model.eval()
        x, y = digits.test.x, digits.test.y
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        assert clean.float().mean() > 0.9
        return model, x, y, clean

    return make
