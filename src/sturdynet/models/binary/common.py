"""Pieces shared by the binary models: binary 3x3 convs and the growable base class.

A :class:`BinaryNet` knows how it was built (``build_args``) and its channel *groups*:
sets of layers whose output channels must have the same count (a residual stage, or
one layer of a plain network). Its ``widths`` give one channel count per group, and
``gates`` (set only during RA-BNN growth, :mod:`sturdynet.quant.binary.ra_bnn`) multiply
each group's feature maps by a channel mask. Because growth makes the widths part of
the trained state, ``load_state_dict`` first adopts the widths the state_dict was saved
with (so a checkpoint of a grown network loads into a model built at the base widths).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor, nn

from ...quant.layers import QuantConv2d
from ...quant.binary.quantizers import BinaryWeightQuantizer, SignActivation
from ...core.registry import MODELS

_PROBES = (37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)


def binary_conv3x3(cin: int, cout: int, stride: int = 1, estimator: str = "approx_sign",
                   weight_estimator: str = "clipped_ste") -> QuantConv2d:
    """3x3 conv with sign(x) inputs and sign(w) * alpha weights (no bias)."""
    return QuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False,
                       weight_quantizer=BinaryWeightQuantizer(cout, weight_estimator),
                       act_quantizer=SignActivation(estimator))


def check_widths(widths: Sequence[int], n: int, name: str) -> Tuple[int, ...]:
    """Validate a per-group width list of length ``n``."""
    widths = tuple(int(w) for w in widths)
    if len(widths) != n:
        raise ValueError(f"{name} takes {n} widths (one per channel group), got {len(widths)}: {list(widths)}")
    if any(w < 1 for w in widths):
        raise ValueError(f"{name} widths must be >= 1, got {list(widths)}")
    return widths


class BinaryNet(nn.Module):
    """Base class of growable binary models.

    Args:
        arch: the registered model name (used by :meth:`rebuild`).
        build_args: the keyword arguments the model was built with.
        widths: channel count of each group.
    """

    def __init__(self, arch: str, build_args: Dict[str, Any], widths: Sequence[int]) -> None:
        super().__init__()
        self.arch = arch
        self.build_args = dict(build_args)
        self.widths = tuple(widths)
        self.gates: Optional[nn.ModuleList] = None
        self._masks: list = []

    def sample_gates(self) -> None:
        """Draw every group's mask once; subclasses call this at the start of ``forward``."""
        self._masks = [g() for g in self.gates] if self.gates is not None else []

    def gate(self, group: int, x: Tensor) -> Tensor:
        """``x`` times group ``group``'s channel mask (``x`` itself when no gates are set)."""
        if self.gates is None:
            return x
        return x * self._masks[group].view(1, -1, *([1] * (x.dim() - 2)))

    def set_gates(self, gates: Optional[Sequence[nn.Module]]) -> None:
        """Attach one gate per group (each returns a (width,) mask), or remove them (None)."""
        if gates is None:
            self.gates = None
            return
        if len(gates) != len(self.widths):
            raise ValueError(f"need {len(self.widths)} gates (one per group), got {len(gates)}")
        self.gates = nn.ModuleList(gates)

    def rebuild(self, widths: Sequence[int]) -> "BinaryNet":
        """A fresh (untrained) model of the same kind with other group widths."""
        return MODELS.get(self.arch)(**{**self.build_args, "widths": tuple(widths)})

    def channel_map(self) -> Dict[str, List[Tuple[int, int, int]]]:
        """For each state_dict entry: the (dim, group, repeat) of every dim sized by a group width.

        Found by building the same architecture with distinct probe widths; ``repeat > 1``
        marks a flattened (channel-major) dim such as VGG-Small's classifier input.
        """
        avoid = {self.build_args.get("in_channels"), self.build_args.get("num_classes")}
        probes = [p for p in _PROBES if p not in avoid][:len(self.widths)]
        if len(probes) < len(self.widths):
            raise ValueError(f"too many channel groups ({len(self.widths)}) to probe")
        probe = self.rebuild(probes)
        rep = int(getattr(probe, "flat_spatial", 1))
        out: Dict[str, List[Tuple[int, int, int]]] = {}
        for name, t in probe.state_dict().items():
            dims = []
            for d, size in enumerate(t.shape):
                for g, p in enumerate(probes):
                    if size == p:
                        dims.append((d, g, 1))
                    elif rep > 1 and size == p * rep:
                        dims.append((d, g, rep))
            if dims:
                out[name] = dims
        return out

    def widths_of(self, state_dict: Mapping[str, Tensor]) -> Tuple[int, ...]:
        """The group widths a state_dict of this architecture was saved with."""
        found: Dict[int, int] = {}
        for name, dims in self.channel_map().items():
            for d, g, rep in dims:
                if name in state_dict and g not in found and rep == 1:
                    found[g] = int(state_dict[name].shape[d])
        return tuple(found.get(g, w) for g, w in enumerate(self.widths))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Adopt the state_dict's group widths (rebuilding the layers if they differ), then load."""
        widths = self.widths_of(state_dict)
        if widths != self.widths:
            new = self.rebuild(widths)
            device = next(self.parameters()).device
            training = self.training
            self.__dict__.update(new.__dict__)
            self.to(device)
            self.train(training)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
