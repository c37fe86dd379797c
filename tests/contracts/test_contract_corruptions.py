"""Contract of every registered corruption (``CORRUPTIONS``).

For each name and severity 1 and 5, on RGB 16x16 and gray 8x8 images: the corrupted
copy keeps the shape and dtype, lies in [0, 1], is finite, leaves the input untouched,
and the same generator seed gives the same result.

To extend: nothing to do; a corruption takes no parameters, so every registered name runs
as it is. ``SKIP_GRAY`` would list a corruption defined for RGB only (none today).
"""
from __future__ import annotations

import pytest
import torch

from sturdynet.core.registry import CORRUPTIONS

from contract_helpers import assert_covers

#: corruptions that are defined for 3-channel images only (checked on RGB alone)
SKIP_GRAY: set = set()

NAMES = CORRUPTIONS.names()
COVERS = {"corruptions": NAMES}  # read by test_contract_coverage.py


def test_contract_covers_every_corruption():
    assert_covers(CORRUPTIONS, NAMES, dict.fromkeys(SKIP_GRAY))


def _images(channels: int, size: int) -> torch.Tensor:
    return torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(channels))


@pytest.mark.parametrize("name", NAMES)
def test_corruption_keeps_shape_and_range(name):
    shapes = [(3, 16)] + ([] if name in SKIP_GRAY else [(1, 8)])
    for channels, size in shapes:
        x = _images(channels, size)
        x0 = x.clone()
        for severity in (1, 5):
            out = CORRUPTIONS.create(name, x, severity, torch.Generator().manual_seed(1))
            assert out.shape == x.shape and out.dtype == x.dtype
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
            again = CORRUPTIONS.create(name, x, severity, torch.Generator().manual_seed(1))
            assert torch.equal(out, again), "the same generator seed gave another result"
        assert torch.equal(x, x0), "the corruption changed its input"
