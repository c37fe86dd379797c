"""Which output channels can be removed, and what else changes with them.

A :class:`ChannelGroup` is one conv (or linear) layer whose output channels feed only
an optional batch norm, channel-wise layers and then exactly one consumer layer. Two
patterns are recognised, by module structure (no tracing):

* inside an ``nn.Sequential`` (exactly that class, so its forward is the plain chain):
  ``conv/linear -> [BatchNorm] -> [ReLU, pooling, Dropout, Flatten, ...] -> conv/linear``;
  a ``Flatten`` before a linear consumer maps channel c to its ``in_features / C``
  consecutive inputs;
* a residual block, i.e. a module with ``conv1``, ``bn1``, ``conv2`` and ``shortcut``
  attributes (resnet20, resnet18): the block-internal channels ``conv1 -> bn1 -> conv2``.
  Channels that cross blocks (the residual stream: ``conv2``/``bn2``, the shortcut and
  the stem) are never pruned, so the option-A (zero-pad) and 1x1-conv shortcuts stay
  untouched. This is the choice of Li et al., "Pruning Filters for Efficient ConvNets"
  (arXiv 1608.08710), who prune only the first layer of each residual block.

* a VGG-style module with ``num_convs`` numbered layers ``conv{i}`` / ``bn{i}`` and a
  final ``fc`` (vgg_small): every conv, the last one into ``fc`` through the flatten.

Everything between producer and consumer must map a zero channel to a zero channel
(activations with f(0) = 0, max / average pooling, dropout, flatten); anything else ends
the pattern and the producer is left alone. The block pattern assumes the block computes
``conv2(act(bn1(conv1(x))))`` with ``act(0) = 0``, as every basic residual block does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from torch import nn

_PRODUCERS = (nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# zero in -> zero out, channel by channel
_PASSTHROUGH = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Tanh, nn.GELU, nn.SiLU, nn.Mish,
                nn.Softshrink, nn.Hardshrink, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d,
                nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class ChannelGroup:
    """One prunable set of channels.

    Attributes:
        producer: name of the conv/linear layer whose output channels are removed.
        norm: name of the batch norm on those channels (None if there is none).
        consumers: (name, inputs per channel) of the layers that read the channels.
    """

    producer: str
    norm: Optional[str] = None
    consumers: List[Tuple[str, int]] = field(default_factory=list)


def out_channels(m: nn.Module) -> int:
    """Output channels of a conv layer, output features of a linear one."""
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _plain_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == 1


def _block_group(name: str, m: nn.Module) -> Optional[ChannelGroup]:
    if not hasattr(m, "shortcut"):
        return None
    c1, b1, c2 = getattr(m, "conv1", None), getattr(m, "bn1", None), getattr(m, "conv2", None)
    if not (_plain_conv(c1) and _plain_conv(c2) and isinstance(b1, nn.BatchNorm2d)):
        return None
    if b1.num_features != c1.out_channels or c2.in_channels != c1.out_channels:
        return None
    p = f"{name}." if name else ""
    return ChannelGroup(producer=p + "conv1", norm=p + "bn1", consumers=[(p + "conv2", 1)])


def _numbered_groups(name: str, m: nn.Module) -> Optional[List[ChannelGroup]]:
    """VGG-style modules with ``num_convs`` layers ``conv{i}`` / ``bn{i}`` and a final ``fc``
    (sturdynet's vgg_small): conv{i} -> [pool] -> bn{i} -> act -> conv{i+1}, the last one
    through pooling and a flatten into ``fc``."""
    n = getattr(m, "num_convs", None)
    if not isinstance(n, int) or n < 1 or not isinstance(getattr(m, "fc", None), nn.Linear):
        return None
    p = f"{name}." if name else ""
    convs = [getattr(m, f"conv{i}", None) for i in range(n)]
    norms = [getattr(m, f"bn{i}", None) for i in range(n)]
    if not all(_plain_conv(c) for c in convs) or not all(isinstance(b, nn.BatchNorm2d) for b in norms):
        return None
    out: List[ChannelGroup] = []
    for i in range(n):
        c = convs[i].out_channels
        if norms[i].num_features != c:
            return None
        g = ChannelGroup(producer=f"{p}conv{i}", norm=f"{p}bn{i}")
        if i + 1 < n:
            if convs[i + 1].in_channels != c:
                return None
            g.consumers.append((f"{p}conv{i + 1}", 1))
        else:
            if m.fc.in_features % c:
                return None
            g.consumers.append((f"{p}fc", m.fc.in_features // c))
        out.append(g)
    return out


def _chain_group(prefix: str, children: List[Tuple[str, nn.Module]], i: int) -> Optional[ChannelGroup]:
    pname, prod = children[i]
    if isinstance(prod, nn.Conv2d) and prod.groups != 1:
        return None
    c = out_channels(prod)
    group = ChannelGroup(producer=prefix + pname)
    flattened = False
    for name, m in children[i + 1:]:
        if isinstance(m, _NORMS) and group.norm is None and not flattened:
            if m.num_features != c or not m.affine:
                return None
            group.norm = prefix + name
        elif isinstance(m, nn.Flatten):
            if flattened or m.start_dim != 1 or m.end_dim != -1 or isinstance(prod, nn.Linear):
                return None
            flattened = True
        elif isinstance(m, _PASSTHROUGH):
            continue
        elif _plain_conv(m) and not flattened and not isinstance(prod, nn.Linear):
            if m.in_channels != c:
                return None
            group.consumers.append((prefix + name, 1))
            return group
        elif isinstance(m, nn.Linear):
            if isinstance(prod, nn.Linear) and m.in_features == c:
                group.consumers.append((prefix + name, 1))
                return group
            if flattened and m.in_features % c == 0:
                group.consumers.append((prefix + name, m.in_features // c))
                return group
            return None
        else:
            return None
    return None


def find_groups(model: nn.Module) -> List[ChannelGroup]:
    """Every prunable channel group of ``model``, in module order."""
    groups: List[ChannelGroup] = []
    blocks: Set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(b + ".") for b in blocks):
            continue
        g = _block_group(name, m)
        if g is not None:
            groups.append(g)
            blocks.add(name)
            continue
        numbered = _numbered_groups(name, m)
        if numbered is not None:
            groups.extend(numbered)
            blocks.add(name)
            continue
        if type(m) is nn.Sequential:
            prefix = f"{name}." if name else ""
            children = list(m.named_children())
            for i, (_, child) in enumerate(children):
                if isinstance(child, _PRODUCERS):
                    cg = _chain_group(prefix, children, i)
                    if cg is not None:
                        groups.append(cg)
    return groups
