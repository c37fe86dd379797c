"""CIFAR ResNet-(6n+2) of He et al., arXiv 1512.03385, Sec. 4.2 (resnet20/32/44/56/110).

A 3x3 conv with 16 filters, three stages of n BasicBlocks with 16, 32 and 64 filters
(feature maps 32, 16 and 8 on CIFAR), global average pooling and a linear layer;
option-A (parameter-free) shortcuts where the shape changes. ``depth`` = 6n + 2;
``width`` scales every channel count (channels = round(16 * width) etc.).
At width 1, depth 20 and 10 classes the model has 269,722 parameters (option A) or
272,474 (``shortcut: B``, 1x1 projections). On 8x8 inputs the stages see 8x8, 4x4
and 2x2 feature maps; strided layers never shrink a map below 1x1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Tuple

from torch import nn

from ..core.params import ConfigError, rng
from ..core.registry import MODELS
from .resnet_cifar import CifarResNet


@dataclass(frozen=True)
class ResNet20Params:
    """``depth`` = 6n + 2 (20, 32, 44, 56, 110, ...); ``width`` multiplies channel counts."""

    depth: int = rng(8, None, default=20)
    width: float = rng(0, None, "()", default=1.0)
    shortcut: Literal["A", "B"] = "A"

    def __post_init__(self) -> None:
        if (self.depth - 2) % 6 != 0:
            raise ConfigError("depth", f"must be 6n + 2 (20, 32, 44, 56, 110, ...), got {self.depth}")


@MODELS.register("resnet20", params=ResNet20Params)
def resnet20(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
             std: Sequence[float], depth: int = 20, width: float = 1.0, shortcut: str = "A") -> nn.Module:
    """Build a CIFAR ResNet of the given ``depth`` (default 20) and ``width``."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    n = (depth - 2) // 6
    chans = [max(1, int(round(c * width))) for c in (16, 32, 64)]
    return CifarResNet(in_channels, num_classes, mean, std, stage_channels=chans, blocks_per_stage=[n] * 3,
                       stem_channels=chans[0], shortcut=shortcut)
