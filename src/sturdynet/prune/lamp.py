"""LAMP: Layer-Adaptive Magnitude-based Pruning (Lee et al., arXiv 2010.07611).

Within each layer the weights are sorted by magnitude, ascending (``u < v`` means
``|w_u| <= |w_v|``); the LAMP score of weight u is

    score(u) = w_u^2 / sum_{v >= u} w_v^2

(the sum runs over u itself and every weight at least as large). Scores are then
compared across layers and the ``round(sparsity * N)`` smallest are pruned: a global
top-k. The largest weight of every layer scores 1, so no layer is ever emptied.
Ties in magnitude are ordered by position (the paper leaves them unspecified).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.params import rng
from ..core.registry import METHODS
from .base import PruningMethod, global_keep


@dataclass(frozen=True)
class LAMPParams:
    sparsity: float = rng(0, 1, "[)", default=0.9)
    include_first: bool = True
    include_last: bool = True


def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP scores of one layer's weights (float64, in the weight's shape).

    A weight that is zero, with only zeros at or above it, scores 0.
    """
    w2 = weight.detach().flatten().double() ** 2
    order = torch.sort(w2, stable=True).indices
    sorted_w2 = w2[order]
    # suffix sums: sum over v >= u in ascending order
    suffix = torch.flip(torch.cumsum(torch.flip(sorted_w2, [0]), 0), [0])
    sorted_scores = torch.where(suffix > 0, sorted_w2 / suffix.clamp_min(torch.finfo(torch.float64).tiny),
                                torch.zeros_like(sorted_w2))
    scores = torch.empty_like(w2)
    scores[order] = sorted_scores
    return scores.view_as(weight)


@METHODS.register("prune.lamp", params=LAMPParams)
class LAMP(PruningMethod):
    """Prune the ``round(sparsity * N)`` weights with the smallest LAMP scores."""

    def masks(self, layers, params: LAMPParams):
        scores = [lamp_scores(m.weight).flatten() for _, m in layers]
        total = sum(s.numel() for s in scores)
        return global_keep(scores, int(round(params.sparsity * total)))
