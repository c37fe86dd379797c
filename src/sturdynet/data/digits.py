"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes): the default data set."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.params import rng
from ..core.registry import DATASETS
from .base import DataBundle, DataParams, stratified_indices


@dataclass(frozen=True)
class DigitsParams(DataParams):
    """``test_fraction`` of the 1,797 images form the test split (stratified, seeded)."""

    test_fraction: float = rng(0, 1, "()", default=0.2)


@DATASETS.register("digits", params=DigitsParams)
def load_digits(params: DigitsParams, seed: int) -> DataBundle:
    """Load the digits as (N, 1, 8, 8) floats in [0, 1] (pixel values 0..16 divided by 16)."""
    from sklearn.datasets import load_digits as _load

    from .base import make_bundle

    d = _load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed + 1)
    test_idx, train_idx = stratified_indices(y, int(round(params.test_fraction * len(y))), g)
    return make_bundle("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], params, seed,
                       class_names=[str(i) for i in range(10)])
