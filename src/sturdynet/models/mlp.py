"""A multi-layer perceptron on flattened images."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from torch import nn

from ..core.params import rng
from ..core.registry import MODELS
from .common import Normalize


@dataclass(frozen=True)
class MLPParams:
    hidden: Tuple[int, ...] = (256, 128)
    dropout: float = rng(0, 1, "[)", default=0.0)


@MODELS.register("mlp", params=MLPParams)
def mlp(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
        std: Sequence[float], hidden: Tuple[int, ...] = (256, 128), dropout: float = 0.0) -> nn.Module:
    """Normalize -> Flatten -> [Linear -> ReLU (-> Dropout)] * len(hidden) -> Linear."""
    layers = [Normalize(mean, std), nn.Flatten()]
    width = in_channels * input_size[0] * input_size[1]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
