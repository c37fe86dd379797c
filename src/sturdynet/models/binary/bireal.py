"""Bi-Real-style binary ResNets (Liu et al., Bi-Real Net, arXiv 1808.00278).

Every binary 3x3 conv (sign inputs, sign(w) * alpha weights) is followed by batch norm
and has its *own* real-valued shortcut around it, ``x <- BN(conv(sign(x))) + shortcut(x)``,
so real-valued information flows past each binary conv. Where the shape changes, the
shortcut is full precision: 2x2 average pooling (stride 2), a 1x1 conv and batch norm,
as Bi-Real Net does. The first conv (after :class:`~sturdynet.models.Normalize`) and the
last linear layer stay full precision. There is no ReLU: ``sign`` is the nonlinearity.

- ``bireal_resnet20``: CIFAR ResNet-20 layout, stages of width (w, 2w, 4w), 3 basic blocks
  (6 binary convs) per stage, default ``w = 16``;
- ``bireal_resnet18``: ResNet-18 with the CIFAR 3x3 stem, stages (w, 2w, 4w, 8w), 2 basic
  blocks per stage, default ``w = 64``.

Channel groups (for RA-BNN growth) are the stages: the stem and every conv of a stage
share the stage's residual stream. Works on any input of at least 1x1 (8x8 digits,
32x32 CIFAR).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from ...core.params import rng
from ...quant.binary.estimators import Estimator
from ...core.registry import MODELS
from ..common import Normalize
from .common import BinaryNet, binary_conv3x3, check_widths



class BiRealUnit(nn.Module):
    """``BN(binary_conv(x)) + shortcut(x)``; the shortcut is identity or avgpool-1x1conv-BN."""

    def __init__(self, cin: int, cout: int, stride: int, estimator: str, weight_estimator: str) -> None:
        super().__init__()
        self.conv = binary_conv3x3(cin, cout, stride, estimator, weight_estimator)
        self.bn = nn.BatchNorm2d(cout)
        if stride == 1 and cin == cout:
            self.shortcut: nn.Module = nn.Identity()
        else:
            pool = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride > 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)) + self.shortcut(x)


class BiRealResNet(BinaryNet):
    """Stem conv-BN (full precision), Bi-Real units per stage, global pool, linear."""

    def __init__(self, arch: str, build_args: dict, in_channels: int, num_classes: int, mean: Sequence[float],
                 std: Sequence[float], widths: Tuple[int, ...], blocks: int, estimator: str,
                 weight_estimator: str) -> None:
        super().__init__(arch, build_args, widths)
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        units, groups = [], []
        cin = widths[0]
        for s, w in enumerate(widths):
            for i in range(2 * blocks):  # a basic block = two binary convs
                stride = 2 if (s > 0 and i == 0) else 1
                units.append(BiRealUnit(cin, w, stride, estimator, weight_estimator))
                groups.append(s)
                cin = w
        self.units = nn.ModuleList(units)
        self.unit_groups = tuple(groups)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        self.sample_gates()
        x = self.gate(0, self.stem_bn(self.stem(self.normalize(x))))
        for unit, g in zip(self.units, self.unit_groups):
            x = self.gate(g, unit(x))
        return self.fc(self.pool(x).flatten(1))


@dataclass(frozen=True)
class BiRealParams:
    width: Optional[int] = rng(1, None, default=None)  # None: 16 (resnet20) / 64 (resnet18)
    widths: Optional[Tuple[int, ...]] = rng(1, None, default=None)  # per stage; overrides width
    estimator: Estimator = "approx_sign"
    weight_estimator: Estimator = "clipped_ste"


def _build(arch: str, stages: int, blocks: int, default_width: int, in_channels: int, num_classes: int,
           input_size: Tuple[int, int], mean: Sequence[float], std: Sequence[float], width: Optional[int],
           widths: Optional[Sequence[int]], estimator: str, weight_estimator: str) -> BiRealResNet:
    if min(input_size) < 1:
        raise ValueError(f"{arch} needs a non-empty input, got {input_size}")
    w = default_width if width is None else int(width)
    ws = check_widths(widths if widths is not None else [w * 2 ** s for s in range(stages)], stages, arch)
    args = dict(in_channels=in_channels, num_classes=num_classes, input_size=tuple(input_size), mean=tuple(mean),
                std=tuple(std), width=width, widths=widths, estimator=estimator, weight_estimator=weight_estimator)
    return BiRealResNet(arch, args, in_channels, num_classes, mean, std, ws, blocks, estimator, weight_estimator)


@MODELS.register("bireal_resnet20", params=BiRealParams)
def bireal_resnet20(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
                    std: Sequence[float], width: Optional[int] = None, widths: Optional[Sequence[int]] = None,
                    estimator: str = "approx_sign", weight_estimator: str = "clipped_ste") -> BiRealResNet:
    """Binary ResNet-20 with Bi-Real shortcuts (18 binary convs, stages w/2w/4w, w=16)."""
    return _build("bireal_resnet20", 3, 3, 16, in_channels, num_classes, input_size, mean, std, width, widths,
                  estimator, weight_estimator)


@MODELS.register("bireal_resnet18", params=BiRealParams)
def bireal_resnet18(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
                    std: Sequence[float], width: Optional[int] = None, widths: Optional[Sequence[int]] = None,
                    estimator: str = "approx_sign", weight_estimator: str = "clipped_ste") -> BiRealResNet:
    """Binary ResNet-18 (CIFAR stem) with Bi-Real shortcuts (16 binary convs, stages w..8w, w=64)."""
    return _build("bireal_resnet18", 4, 2, 64, in_channels, num_classes, input_size, mean, std, width, widths,
                  estimator, weight_estimator)
