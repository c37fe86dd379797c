"""ResNet-18 (He et al., arXiv 1512.03385, Table 1) with the usual CIFAR stem.

Deviation from the ImageNet model, as in the common CIFAR variant: the stem is one 3x3
conv with stride 1 and no max-pool (instead of a 7x7 stride-2 conv and a 3x3 max-pool),
so a 32x32 input gives feature maps of 32, 16, 8 and 4 in the four stages (64, 128, 256
and 512 channels, two BasicBlocks each, option-B 1x1 projection shortcuts where the
shape changes). 11,173,962 parameters at width 1 with 10 classes. On 8x8 inputs the
stages see 8, 4, 2 and 1; strides never shrink a map below 1x1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from torch import nn

from ..core.params import rng
from ..core.registry import MODELS
from .resnet_cifar import CifarResNet


@dataclass(frozen=True)
class ResNet18Params:
    """``width`` multiplies every channel count (64 * width in the stem and first stage)."""

    width: float = rng(0, None, "()", default=1.0)


@MODELS.register("resnet18", params=ResNet18Params)
def resnet18(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
             std: Sequence[float], width: float = 1.0) -> nn.Module:
    """Build the CIFAR-stem ResNet-18."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    chans = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
    return CifarResNet(in_channels, num_classes, mean, std, stage_channels=chans, blocks_per_stage=[2] * 4,
                       stem_channels=chans[0], shortcut="B")
