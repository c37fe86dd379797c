"""SET: Sparse Evolutionary Training.

Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
connectivity inspired by network science" (arXiv 1707.04780): start from a random
sparse (Erdos-Renyi) topology; after each training epoch remove the fraction ``zeta``
of each layer's active weights closest to zero and add the same number of connections
at random inactive positions.

Deviations (the common modern form, as in RigL's SET baseline): the removed weights
are the ``zeta`` fraction with the smallest magnitude (rather than ``zeta`` of the
smallest positive plus ``zeta`` of the largest negative), new connections start at
zero instead of a small random value, and evolution stops after ``t_end`` of training
(0.75 by default, like RigL) so the last epochs train a fixed topology.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ...core.method import TrainingContext, TrainingMethod
from ...core.params import rng
from ...core.registry import CALLBACKS, METHODS
from ..base import attach_ones, select_layers
from .common import DynamicSparseCallback, train_sparse_from_scratch


@dataclass(frozen=True)
class SETParams:
    zeta: float = rng(0, 1, "()", default=0.3)
    interval: Optional[int] = rng(1, None, default=None)
    t_end: float = rng(0, 1, "(]", default=0.75)
    decay: Literal["constant", "cosine"] = "constant"
    seed: Optional[int] = rng(0, None, default=None)


@CALLBACKS.register("set", params=SETParams)
class SET(DynamicSparseCallback):
    """Drop the smallest-magnitude ``zeta`` fraction, regrow as many at random positions.

    ``interval`` None updates once per epoch (the paper's schedule).
    """

    def __init__(self, zeta: float = 0.3, interval: Optional[int] = None, t_end: float = 0.75,
                 decay: str = "constant", seed: Optional[int] = None) -> None:
        super().__init__(alpha=zeta, interval=interval, t_end=t_end, decay=decay, seed=seed)

    def grow_score(self, module: nn.Module, param: str, grad: Optional[Tensor]) -> Tensor:
        w = getattr(module, param)
        return torch.rand(w.shape, generator=self.gen).to(w.device)


@dataclass(frozen=True)
class SETMethodParams(SETParams):
    sparsity: float = rng(0, 1, "()", default=0.9)
    distribution: Literal["erk", "er", "uniform"] = "erk"
    dense_first: bool = False
    epochs: Optional[int] = rng(1, None, default=None)
    from_scratch: bool = True


@METHODS.register("prune.set", params=SETMethodParams)
class SETMethod(TrainingMethod):
    """Sparse training from scratch with SET: a random ``distribution`` mask at
    ``sparsity``, then ``epochs`` epochs (the run's training config) with the SET callback.

    ``from_scratch`` (default) restarts from the initial weights; false keeps the given
    model's weights under the random mask.
    """

    def apply(self, model: nn.Module, params: SETMethodParams, ctx: TrainingContext) -> nn.Module:
        cb = SET(zeta=params.zeta, interval=params.interval, t_end=params.t_end, decay=params.decay, seed=params.seed)
        return train_sparse_from_scratch("prune.set", model, params, ctx, [cb])

    def prepare(self, model: nn.Module, params: SETMethodParams) -> nn.Module:
        import copy

        model = copy.deepcopy(model)
        attach_ones(model, select_layers(model))
        return model
