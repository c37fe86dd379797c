"""Random pruning: the baseline every pruning criterion must beat.

Each selected layer keeps ``round(density_l * n_l)`` weights chosen uniformly at random
(a seeded ``torch.Generator``, so a seed gives the same mask on every machine). The
per-layer densities are either uniform or Erdos-Renyi-Kernel (RigL, arXiv 1911.11134;
see :mod:`sturdynet.prune.erk`), which is the random sparse initialisation of
SET / RigL (Liu et al., arXiv 2202.02643, study random pruning with both). The counts
are rounded so that the total kept is exactly ``round((1 - sparsity) * N)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..core.params import rng
from ..core.registry import METHODS
from .base import PruningMethod, fit_counts
from .erk import layer_densities


@dataclass(frozen=True)
class RandomParams:
    sparsity: float = rng(0, 1, "[)", default=0.9)
    distribution: Literal["uniform", "erk", "er"] = "uniform"
    seed: int = rng(0, None, default=0)
    include_first: bool = True
    include_last: bool = True


@METHODS.register("prune.random", params=RandomParams)
class RandomPruning(PruningMethod):
    """Keep a seeded random subset of each layer, sized by the chosen distribution."""

    def masks(self, layers, params: RandomParams):
        shapes = [tuple(m.weight.shape) for _, m in layers]
        sizes = [m.weight.numel() for _, m in layers]
        dens = layer_densities(shapes, 1.0 - params.sparsity, params.distribution)
        want = int(round((1.0 - params.sparsity) * sum(sizes)))
        kept = fit_counts([d * n for d, n in zip(dens, sizes)], sizes, want)
        gen = torch.Generator().manual_seed(params.seed)
        out = []
        for (_, m), k in zip(layers, kept):
            perm = torch.randperm(m.weight.numel(), generator=gen)
            keep = torch.zeros(m.weight.numel(), dtype=torch.bool)
            keep[perm[:k]] = True
            out.append(keep.to(m.weight.device))
        return out
