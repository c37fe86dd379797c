"""Global magnitude pruning: one |w| ranking over all conv and linear weights.

Han et al. 2015 (arXiv 1506.02626) prune by magnitude; ranking all layers together
with a single threshold is the "global" variant used as the standard baseline (Blalock
et al., arXiv 2003.03033). Exactly ``round(sparsity * N)`` of the N candidate weights
are removed (ties broken by position).

Two guards against layer collapse (a global threshold wiping out a small layer):

* ``min_threshold`` -- the Minimum Threshold (MT) of Gupta et al., "Global Magnitude
  Pruning With Minimum Threshold Is All We Need" (arXiv 2209.14624), as in the
  authors' code: MT is a number of weights, ``int(min_threshold * N)`` (their
  ``--min-threshold`` is in percent of N, default 0.05%, i.e. ``min_threshold: 0.0005``).
  Starting from the per-layer sparsities that plain global pruning gives, layers with
  at most MT weights are kept dense and the others are rescaled to the target; any
  layer left with fewer than MT weights is set to keep exactly MT, and the rescale /
  clamp is repeated until the target is met. Each layer then drops its smallest |w|.
  Deviation: the per-layer counts are rounded so that the total is exact (the authors
  round each layer on its own).
* ``min_keep`` -- a simpler sturdynet guard: every layer keeps at least
  ``ceil(min_keep * n_layer)`` of its largest weights; the rest is ranked globally.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import torch

from ..core.params import rng
from ..core.registry import METHODS
from .base import PruningMethod, fit_counts, global_keep, layer_keep


@dataclass(frozen=True)
class GlobalMagnitudeParams:
    sparsity: float = rng(0, 1, "[)", default=0.9)
    min_threshold: float = rng(0, 1, "[)", default=0.0)
    min_keep: float = rng(0, 1, "[]", default=0.0)
    include_first: bool = True
    include_last: bool = True

    def __post_init__(self) -> None:
        if self.min_threshold > 0 and self.min_keep > 0:
            raise ValueError("give either min_threshold (MT, arXiv 2209.14624) or min_keep, not both")


def mt_prune_counts(sizes: Sequence[int], global_pruned: Sequence[int], sparsity: float,
                    min_weights: int, max_iter: int = 10000) -> List[int]:
    """Per-layer pruned counts under the Minimum Threshold rule of arXiv 2209.14624.

    Args:
        sizes: weights per layer.
        global_pruned: what plain global magnitude pruning removes from each layer.
        sparsity: the overall target.
        min_weights: MT, the number of weights every layer keeps (all of them if it has fewer).

    Raises:
        ValueError: when the layers cannot keep MT weights each and still reach the target.
    """
    n = [int(s) for s in sizes]
    total = sum(n)
    want = int(round(sparsity * total))
    caps = [max(0, s - min_weights) for s in n]  # most each layer may lose
    if want > sum(caps):
        raise ValueError(f"min_threshold keeps {total - sum(caps)} weights, more than the "
                         f"{total - want} that sparsity {sparsity} leaves")
    if min_weights <= 0 or want == 0:
        return list(global_pruned)
    sp = [p / s if s > min_weights else 0.0 for p, s in zip(global_pruned, n)]
    cur = sum(a * b for a, b in zip(sp, n))
    if cur <= 0:
        # Global pruning touched only layers that MT keeps dense: spread uniformly.
        sp = [1.0 if s > min_weights else 0.0 for s in n]
        cur = sum(a * b for a, b in zip(sp, n))
    sp = [a * want / cur for a in sp]
    for _ in range(max_iter):
        low = [i for i, s in enumerate(n) if s > min_weights and (1 - sp[i]) * s < min_weights]
        for i in low:
            sp[i] = 1 - min_weights / n[i]
        cur = sum(a * b for a, b in zip(sp, n))
        if cur >= want - 1e-6:
            break
        sp = [a * want / cur for a in sp]
    return fit_counts([a * b for a, b in zip(sp, n)], caps, want)


@METHODS.register("prune.global_magnitude", params=GlobalMagnitudeParams)
class GlobalMagnitude(PruningMethod):
    """Prune the globally smallest |w| to reach ``sparsity`` over the selected layers."""

    def masks(self, layers, params: GlobalMagnitudeParams):
        scores = [m.weight.detach().abs().flatten() for _, m in layers]
        sizes = [s.numel() for s in scores]
        total = sum(sizes)
        n_prune = int(round(params.sparsity * total))
        if params.min_keep > 0:
            # Each layer's protected top weights get +inf so they are never pruned.
            adjusted = []
            for s in scores:
                k = min(s.numel(), int(math.ceil(params.min_keep * s.numel())))
                a = s.clone()
                if k > 0:
                    a[torch.topk(s, k).indices] = float("inf")
                adjusted.append(a)
            n_prune = min(n_prune, sum(int(torch.isfinite(a).sum()) for a in adjusted))
            return global_keep(adjusted, n_prune)
        keeps = global_keep(scores, n_prune)
        mt = int(params.min_threshold * total)
        if mt <= 0:
            return keeps
        pruned = [int((~k).sum()) for k in keeps]
        counts = mt_prune_counts(sizes, pruned, params.sparsity, mt)
        return [layer_keep(s, c) for s, c in zip(scores, counts)]
