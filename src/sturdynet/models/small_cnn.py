"""A small VGG-like CNN that fits 8x8 digits and 32x32 CIFAR alike."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from torch import nn

from ..core.params import rng
from ..core.registry import MODELS
from .common import Normalize


@dataclass(frozen=True)
class SmallCNNParams:
    width: int = rng(1, None, default=32)


def _block(cin: int, cout: int) -> list:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@MODELS.register("small_cnn", params=SmallCNNParams)
def small_cnn(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
              std: Sequence[float], width: int = 32) -> nn.Module:
    """Two conv stages (width, 2*width), each two 3x3 conv-BN-ReLU then a 2x2 max-pool,
    global average pooling and a linear classifier. Works for any input of at least 4x4."""
    if min(input_size) < 4:
        raise ValueError(f"small_cnn needs inputs of at least 4x4, got {input_size}")
    w = width
    return nn.Sequential(
        Normalize(mean, std),
        *_block(in_channels, w), *_block(w, w), nn.MaxPool2d(2),
        *_block(w, 2 * w), *_block(2 * w, 2 * w), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, num_classes),
    )
