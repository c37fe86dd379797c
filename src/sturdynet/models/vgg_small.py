"""VGG-Small, the CIFAR-10 backbone of the binary/low-bit network papers
(LQ-Nets, Zhang et al., arXiv 1807.10029; IR-Net, Qin et al., arXiv 1909.10788).

Layers: 128-128-M-256-256-M-512-512-M, then one linear layer on the flattened
512 x 4 x 4 map (32x32 inputs). Every conv is 3x3 (padding 1, no bias); in the pooled
stages the order is conv -> 2x2 max-pool -> BN -> ReLU, elsewhere conv -> BN -> ReLU,
as in the IR-Net reference code (full-precision model: ReLU activations).
4,660,106 parameters at width 1 with 10 classes.

Small inputs: a max-pool whose input is already 1 pixel high or wide is replaced by
``nn.Identity`` (8x8 digits: 8 -> 4 -> 2 -> 1, all three pools kept, so the linear
layer reads 512 features; 2x2 inputs keep one pool). An ``nn.AdaptiveAvgPool2d`` to the
final map size of the built ``input_size`` sits before the flatten: an identity there,
it lets the model also accept other input sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from torch import Tensor, nn

from ..core.params import rng
from ..core.registry import MODELS
from .common import Normalize
from .init import kaiming_init

CONFIG = (128, 128, "M", 256, 256, "M", 512, 512, "M")


@dataclass(frozen=True)
class VGGSmallParams:
    """``width`` multiplies every channel count (128 * width in the first layer)."""

    width: float = rng(0, None, "()", default=1.0)


class VGGSmall(nn.Module):
    """Normalize, six conv layers ``conv0..conv5`` with ``bn0..bn5`` / ``relu0..relu5``,
    pools ``pool1``, ``pool3``, ``pool5`` after conv1/conv3/conv5, then ``fc``."""

    def __init__(self, in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
                 std: Sequence[float], width: float = 1.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.normalize = Normalize(mean, std)
        h, w = input_size
        cin, i = in_channels, 0
        for item in CONFIG:
            if item == "M":
                pooled = h >= 2 and w >= 2
                setattr(self, f"pool{i - 1}", nn.MaxPool2d(2, 2) if pooled else nn.Identity())
                if pooled:
                    h, w = h // 2, w // 2
                continue
            cout = max(1, int(round(item * width)))
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
            setattr(self, f"relu{i}", nn.ReLU())
            cin, i = cout, i + 1
        self.num_convs = i
        self.avgpool = nn.AdaptiveAvgPool2d((h, w))
        self.fc = nn.Linear(cin * h * w, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        for i in range(self.num_convs):
            x = getattr(self, f"conv{i}")(x)
            if hasattr(self, f"pool{i}"):
                x = getattr(self, f"pool{i}")(x)
            x = getattr(self, f"relu{i}")(getattr(self, f"bn{i}")(x))
        return self.fc(self.avgpool(x).flatten(1))


@MODELS.register("vgg_small", params=VGGSmallParams)
def vgg_small(in_channels: int, num_classes: int, input_size: Tuple[int, int], mean: Sequence[float],
              std: Sequence[float], width: float = 1.0) -> nn.Module:
    """Build VGG-Small for ``input_size`` inputs."""
    return VGGSmall(in_channels, num_classes, tuple(input_size), mean, std, width)
