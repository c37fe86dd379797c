"""Pieces shared by the binary models: binary 3x3 convs and the growable base class.

A :class:`BinaryNet` knows how it was built (``build_args``) and its channel *groups*:
sets of layers whose output channels must have the same count (a residual stage, or
one layer of a plain network). Its ``widths`` give one channel count per group, and
``gates`` (set only during RA-BNN growth, :mod:`sturdynet.quant.binary.ra_bnn`) multiply
each group's feature maps by a channel mask.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from torch import Tensor, nn

from ...nn.quant_layers import QuantConv2d
from ...quant.binary.quantizers import BinaryWeightQuantizer, SignActivation
from ...registry import MODELS


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
