"""Binary VGG-Small, the CIFAR-10 binary-network benchmark model (LQ-Nets arXiv 1807.10029,
used by IR-Net, ReSTE and OvSW).

Six 3x3 convs of widths (w, w, 2w, 2w, 4w, 4w) (default ``w = 128``), each followed by
batch norm, with 2x2 max pooling after the 2nd, 4th and 6th; the first conv and the last
linear layer (on the flattened final feature map) are full precision, the five convs in
between are binary (sign inputs, sign(w) * alpha weights). Pooling rounds up, so 8x8
digits give a 1x1 final map and 32x32 CIFAR a 4x4 one. Each layer is its own channel
group for RA-BNN growth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from ...core.params import rng
from ...quant.binary.estimators import Estimator
from ...core.registry import MODELS
from ..common import Normalize
from .common import BinaryNet, binary_conv3x3, check_widths

_POOL_AFTER = (1, 3, 5)


class BinaryVGGSmall(BinaryNet):
    """conv0 (float) -> 5 binary convs -> linear (float)."""

    def __init__(self, arch: str, build_args: dict, in_channels: int, num_classes: int,
                 input_size: Tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 widths: Tuple[int, ...], estimator: str, weight_estimator: str) -> None:
        super().__init__(arch, build_args, widths)
        self.normalize = Normalize(mean, std)
        convs, bns = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)], [nn.BatchNorm2d(widths[0])]
        for i in range(1, 6):
            convs.append(binary_conv3x3(widths[i - 1], widths[i], 1, estimator, weight_estimator))
            bns.append(nn.BatchNorm2d(widths[i]))
        self.convs, self.bns = nn.ModuleList(convs), nn.ModuleList(bns)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        h, w = input_size
        for _ in _POOL_AFTER:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        self.flat_spatial = h * w
        self.fc = nn.Linear(widths[5] * self.flat_spatial, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        self.sample_gates()
        x = self.normalize(x)
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = conv(x)
            if i in _POOL_AFTER:
                x = self.pool(x)
            x = self.gate(i, bn(x))
        return self.fc(x.flatten(1))


@dataclass(frozen=True)
class BinaryVGGSmallParams:
    width: int = rng(1, None, default=128)
    widths: Optional[Tuple[int, ...]] = rng(1, None, default=None)  # 6 layer widths; overrides width
    estimator: Estimator = "approx_sign"
    weight_estimator: Estimator = "clipped_ste"


@MODELS.register("binary_vgg_small", params=BinaryVGGSmallParams)
def binary_vgg_small(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
                     std: Sequence[float], width: int = 128, widths: Optional[Sequence[int]] = None,
                     estimator: str = "approx_sign", weight_estimator: str = "clipped_ste") -> BinaryVGGSmall:
    """Binary VGG-Small (first conv and classifier in full precision)."""
    if min(input_size) < 1:
        raise ValueError(f"binary_vgg_small needs a non-empty input, got {input_size}")
    w = int(width)
    ws = check_widths(widths if widths is not None else (w, w, 2 * w, 2 * w, 4 * w, 4 * w), 6, "binary_vgg_small")
    args = dict(in_channels=in_channels, num_classes=num_classes, input_size=tuple(input_size), mean=tuple(mean),
                std=tuple(std), width=width, widths=widths, estimator=estimator, weight_estimator=weight_estimator)
    return BinaryVGGSmall("binary_vgg_small", args, in_channels, num_classes, tuple(input_size), mean, std, ws,
                          estimator, weight_estimator)
