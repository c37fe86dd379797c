"""Shared machinery of the pruning methods: layer selection, score ranking, mask attachment."""
from __future__ import annotations

import copy
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core.method import CompressionMethod
from ..core.masks import attach_mask, prunable


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


def current_mask(m: nn.Module) -> Tensor:
    """The layer's existing weight mask (all ones when it has none)."""
    mask = m._buffers.get("weight_mask")
    return torch.ones_like(m.weight, dtype=torch.bool) if mask is None else mask.bool()


def global_keep(scores: Sequence[Tensor], n_prune: int) -> List[Tensor]:
    """Keep-masks that remove exactly the ``n_prune`` globally smallest scores.

    ``scores`` are flattened per-layer score tensors; ties are broken by position.
    """
    sizes = [s.numel() for s in scores]
    flat = torch.cat([s.flatten() for s in scores])
    if not 0 <= n_prune <= flat.numel():
        raise ValueError(f"cannot prune {n_prune} of {flat.numel()} weights")
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[kth_smallest(flat, n_prune)] = False
    return list(torch.split(keep, sizes))


def layer_keep(score: Tensor, n_prune: int) -> Tensor:
    """Flat keep-mask removing the ``n_prune`` smallest entries of one layer's scores."""
    flat = score.flatten()
    if not 0 <= n_prune <= flat.numel():
        raise ValueError(f"cannot prune {n_prune} of {flat.numel()} weights")
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[kth_smallest(flat, n_prune)] = False
    return keep


def fit_counts(exact: Sequence[float], caps: Sequence[int], want: int) -> List[int]:
    """Integer counts near ``exact`` (each in [0, cap]) that add up to ``want``.

    Floors first, then moves single units by largest remainder (smallest when removing).

    Raises:
        ValueError: if ``want`` is outside [0, sum(caps)].
    """
    if not 0 <= want <= sum(caps):
        raise ValueError(f"cannot place {want} in layers that hold at most {sum(caps)}")
    counts = [max(0, min(c, int(math.floor(e)))) for e, c in zip(exact, caps)]
    rem = [e - n for e, n in zip(exact, counts)]
    while sum(counts) < want:
        room = [i for i in range(len(counts)) if counts[i] < caps[i]]
        best = max(room, key=lambda i: (rem[i], -i))
        counts[best] += 1
        rem[best] -= 1.0
    while sum(counts) > want:
        have = [i for i in range(len(counts)) if counts[i] > 0]
        worst = min(have, key=lambda i: (rem[i], i))
        counts[worst] -= 1
        rem[worst] += 1.0
    return counts


class PruningMethod(CompressionMethod):
    """Base for unstructured pruners: subclasses return one keep-mask per layer.

    A weight pruned by an earlier mask stays pruned: the new mask is intersected with
    the layer's existing one, and the existing zeros score as zero.
    """

    def masks(self, layers, params) -> List[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _layers(self, model: nn.Module, params) -> List[Tuple[str, nn.Module]]:
        layers = select_layers(model, getattr(params, "include_first", True), getattr(params, "include_last", True))
        if not layers:
            raise ValueError("the model has no conv or linear layer to prune")
        return layers

    def apply(self, model: nn.Module, params, ctx=None) -> nn.Module:
        model = copy.deepcopy(model)
        layers = self._layers(model, params)
        with torch.no_grad():
            for (_, m), keep in zip(layers, self.masks(layers, params)):
                attach_mask(m, "weight", keep.view_as(m.weight) & current_mask(m))
        return model

    def prepare(self, model: nn.Module, params) -> nn.Module:
        model = copy.deepcopy(model)
        attach_ones(model, self._layers(model, params))
        return model
