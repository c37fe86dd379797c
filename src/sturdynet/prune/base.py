"""Shared machinery of the pruning methods: layer selection and mask attachment."""
from __future__ import annotations

import copy
from typing import List, Tuple

import torch
from torch import Tensor, nn

from ..compress import CompressionMethod
from .mask import attach_mask, prunable


def kth_smallest(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest entries of a 1-d tensor (stable: earlier wins ties)."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    order = torch.sort(scores, stable=True).indices
    return order[:k]


def select_layers(model: nn.Module, include_first: bool = True, include_last: bool = True) -> List[Tuple[str, nn.Module]]:
    """The conv/linear layers a pruner may touch (optionally without the first / last)."""
    layers = prunable(model)
    if not include_first and layers:
        layers = layers[1:]
    if not include_last and layers:
        layers = layers[:-1]
    return layers


def attach_ones(model: nn.Module, layers) -> None:
    for _, m in layers:
        attach_mask(m, "weight", torch.ones_like(m.weight, dtype=torch.bool))


class PruningMethod(CompressionMethod):
    """Base for unstructured pruners: subclasses return one keep-mask per layer."""

    def masks(self, layers, params) -> List[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _layers(self, model: nn.Module, params) -> List[Tuple[str, nn.Module]]:
        return select_layers(model, getattr(params, "include_first", True), getattr(params, "include_last", True))

    def apply(self, model: nn.Module, params, ctx=None) -> nn.Module:
        model = copy.deepcopy(model)
        layers = self._layers(model, params)
        with torch.no_grad():
            for (_, m), keep in zip(layers, self.masks(layers, params)):
                attach_mask(m, "weight", keep)
        return model

    def prepare(self, model: nn.Module, params) -> nn.Module:
        model = copy.deepcopy(model)
        attach_ones(model, self._layers(model, params))
        return model
