"""A small MobileNetV2-style network defined outside sturdynet (Sandler et al., arXiv 1801.04381):
inverted residual blocks (1x1 expand -> 3x3 depthwise -> 1x1 linear projection) with a
residual add where the shape allows. Plain PyTorch; sturdynet only sees an nn.Module.
The network does not normalize its input: the recipe declares ``input_normalization``.
"""
from __future__ import annotations

from torch import nn


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_res else out


class TinyMobileNetV2(nn.Module):
    """Stem conv, four inverted-residual blocks (two with residual adds), 1x1 head conv, linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8, expand: int = 4) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(w, w, 1, expand),
            InvertedResidual(w, 2 * w, 2, expand),
            InvertedResidual(2 * w, 2 * w, 1, expand),
            InvertedResidual(2 * w, 2 * w, 1, expand))
        self.head = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))


def build_net(in_channels: int = 1, num_classes: int = 10, width: int = 8, expand: int = 4) -> nn.Module:
    """The factory a recipe names: ``factory: "net:build_net"`` (with examples/own_model on the path)."""
    return TinyMobileNetV2(in_channels, num_classes, width, expand)
