"""Building blocks of the CIFAR-style residual networks (resnet20/32/44/56, resnet18).

A :class:`BasicBlock` computes ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``
(He et al., arXiv 1512.03385, Fig. 2). The attribute names ``conv1``, ``bn1``,
``conv2``, ``bn2`` and ``shortcut`` are part of the interface: structured pruning
reads them. The shortcut is ``nn.Identity`` when shape is kept, otherwise
:class:`ShortcutA` (option A: parameter-free stride-2 subsampling plus zero-padded
channels, used for the CIFAR ResNets of Sec. 4.2) or an ``nn.Sequential`` of a 1x1
``nn.Conv2d`` and ``nn.BatchNorm2d`` (option B: projection).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from torch import Tensor, nn
import torch.nn.functional as F

from .common import Normalize
from .init import kaiming_init


class ShortcutA(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel, then zero-pad channels.

    The ``out_channels - in_channels`` new channels are split evenly before and after
    the existing ones (``pad_front`` = half, rounded down), as in the reference
    CIFAR ResNets. Spatial size becomes ``ceil(H / stride)``, matching a 3x3 conv with
    padding 1 and the same stride.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (``shortcut`` = "A" or "B")."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        if stride == 1 and in_channels == channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_channels, channels, stride)
        elif shortcut == "B":
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))
        else:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Normalize -> 3x3 conv stem (stride 1, no max-pool) -> stages of BasicBlocks ->
    global average pooling -> ``fc``.

    Args:
        stage_channels: channels of each stage; the first stage has stride 1, the others 2.
        blocks_per_stage: number of BasicBlocks in each stage.
        stem_channels: output channels of the stem conv.
        shortcut: "A" (zero-padding identity) or "B" (1x1 projection) where shapes change.
    """

    def __init__(self, in_channels: int, num_classes: int, mean: Sequence[float], std: Sequence[float],
                 stage_channels: Sequence[int], blocks_per_stage: Sequence[int], stem_channels: int,
                 shortcut: str = "A") -> None:
        super().__init__()
        if len(stage_channels) != len(blocks_per_stage) or not stage_channels:
            raise ValueError("stage_channels and blocks_per_stage must be non-empty and of equal length")
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU()
        cin = stem_channels
        self.stage_names: List[str] = []
        for i, (ch, n) in enumerate(zip(stage_channels, blocks_per_stage)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, ch, stride, shortcut))
                cin = ch
            name = f"layer{i + 1}"
            setattr(self, name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.avgpool(x).flatten(1))


def feature_sizes(input_size: Tuple[int, int], num_stages: int) -> List[Tuple[int, int]]:
    """Spatial size after each stage (stride 1, then 2 for every further stage: ceil(s/2))."""
    h, w = input_size
    out = [(h, w)]
    for _ in range(num_stages - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        out.append((h, w))
    return out
