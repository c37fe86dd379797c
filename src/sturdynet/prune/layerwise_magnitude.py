"""Layer-wise magnitude pruning: the same fraction of the smallest |w| in every layer.

Han et al. 2015 (arXiv 1506.02626) prune by magnitude; the uniform layer-wise variant
is the baseline against which global and LAMP allocations are compared (Lee et al.,
arXiv 2010.07611). Layer l loses exactly ``round(sparsity * n_l)`` weights (ties broken
by position).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.params import rng
from ..core.registry import METHODS
from .base import PruningMethod, layer_keep


@dataclass(frozen=True)
class LayerwiseMagnitudeParams:
    sparsity: float = rng(0, 1, "[)", default=0.9)
    include_first: bool = True
    include_last: bool = True


@METHODS.register("prune.layerwise_magnitude", params=LayerwiseMagnitudeParams)
class LayerwiseMagnitude(PruningMethod):
    """Remove ``round(sparsity * n_l)`` of the smallest |w| in each selected layer."""

    def masks(self, layers, params: LayerwiseMagnitudeParams):
        out = []
        for _, m in layers:
            s = m.weight.detach().abs().flatten()
            out.append(layer_keep(s, int(round(params.sparsity * s.numel()))))
        return out
