"""Global magnitude pruning: one |w| threshold over all conv and linear weights.

Han et al. 2015 (arXiv 1506.02626) prune by magnitude; ranking all layers together
with a single threshold is the "global" variant used as the standard baseline (Blalock
et al., arXiv 2003.03033). ``min_keep`` keeps at least that fraction of every layer,
so a global threshold cannot wipe out a small layer (layer collapse).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import rng
from ..registry import METHODS
from .base import PruningMethod, kth_smallest


@dataclass(frozen=True)
class GlobalMagnitudeParams:
    sparsity: float = rng(0, 1, "[)", default=0.9)
    min_keep: float = rng(0, 1, "[]", default=0.0)
    include_first: bool = True
    include_last: bool = True


@METHODS.register("prune.global_magnitude", params=GlobalMagnitudeParams)
class GlobalMagnitude(PruningMethod):
    """Prune the globally smallest |w| to reach ``sparsity`` over the selected layers.

    Exactly ``round(sparsity * N)`` weights are removed over the N candidate weights
    (ties are broken by position), except where ``min_keep`` forces a layer to keep
    ``ceil(min_keep * n_layer)`` of its largest weights.
    """

    def masks(self, layers, params: GlobalMagnitudeParams):
        scores = [m.weight.detach().abs().flatten() for _, m in layers]
        sizes = [s.numel() for s in scores]
        flat = torch.cat(scores)
        n_prune = int(round(params.sparsity * flat.numel()))
        keep = torch.ones_like(flat, dtype=torch.bool)
        if n_prune > 0:
            # Layers' protected top weights get +inf so they are never pruned.
            adjusted = flat.clone()
            offset = 0
            for s, n in zip(scores, sizes):
                k = int(torch.ceil(torch.tensor(params.min_keep * n)).item())
                if k > 0:
                    top = torch.topk(s, min(k, n)).indices + offset
                    adjusted[top] = float("inf")
                offset += n
            n_prune = min(n_prune, int(torch.isfinite(adjusted).sum()))
            keep[kth_smallest(adjusted, n_prune)] = False
        return [k.view_as(m.weight) for k, (_, m) in zip(torch.split(keep, sizes), layers)]
