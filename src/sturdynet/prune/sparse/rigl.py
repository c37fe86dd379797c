"""RigL: Rigging the Lottery.

Evci et al., arXiv 1911.11134: start from a random sparse mask (ERK by default); every
``delta_t`` steps until ``T_end`` (75% of training), each layer drops the fraction
``f(t) = alpha / 2 * (1 + cos(pi * t / T_end))`` of its active weights with the
smallest magnitude and grows the same number where the magnitude of the dense gradient
on the current batch is largest. Grown weights start at zero. Defaults follow the
paper's CIFAR setting: alpha = 0.3, delta_t = 100.

The dense gradient is the ordinary ``backward`` gradient of the masked weights: a mask
zeroes weights, not gradients, so every position, active or not, has its gradient.
With ``agent: true`` the method adds AGENT's adaptive gradient correction
(:mod:`.agent`, arXiv 2301.03573) after RigL in the callback list, so RigL's growth
criterion reads the uncorrected gradient and the optimizer steps on the corrected one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, Optional

from torch import Tensor, nn

from ...core.method import TrainingContext, TrainingMethod
from ...core.params import rng
from ...core.registry import CALLBACKS, METHODS
from ..base import attach_ones, select_layers
from .agent import AGENT
from .common import DynamicSparseCallback, train_sparse_from_scratch


@dataclass(frozen=True)
class RigLParams:
    alpha: float = rng(0, 1, "()", default=0.3)
    delta_t: int = rng(1, None, default=100)
    t_end: float = rng(0, 1, "(]", default=0.75)
    decay: Literal["cosine", "constant"] = "cosine"


@CALLBACKS.register("rigl", params=RigLParams)
class RigL(DynamicSparseCallback):
    """Drop the smallest |w|, grow where |dense gradient| is largest; cosine drop fraction."""

    needs_grad = True

    def __init__(self, alpha: float = 0.3, delta_t: int = 100, t_end: float = 0.75, decay: str = "cosine") -> None:
        super().__init__(alpha=alpha, interval=delta_t, t_end=t_end, decay=decay, seed=0)

    def grow_score(self, module: nn.Module, param: str, grad: Optional[Tensor]) -> Tensor:
        if grad is None:
            raise ValueError("RigL needs the dense gradient of the update step")
        return grad.abs()


@dataclass(frozen=True)
class RigLMethodParams(RigLParams):
    sparsity: float = rng(0, 1, "()", default=0.9)
    distribution: Literal["erk", "er", "uniform"] = "erk"
    dense_first: bool = False
    epochs: Optional[int] = rng(1, None, default=None)
    from_scratch: bool = True
    agent: bool = False
    agent_gamma: float = rng(0, None, default=0.1)
    agent_tau: float = rng(None, None, default=0.1)
    agent_ema: float = rng(0, 1, "(]", default=0.3)


@METHODS.register("prune.rigl", params=RigLMethodParams)
class RigLMethod(TrainingMethod):
    """Sparse training from scratch with RigL (optionally + AGENT); see the module doc."""

    def apply(self, model: nn.Module, params: RigLMethodParams, ctx: TrainingContext) -> nn.Module:
        cbs = [RigL(alpha=params.alpha, delta_t=params.delta_t, t_end=params.t_end, decay=params.decay)]
        if params.agent:
            cbs.append(AGENT(gamma=params.agent_gamma, tau=params.agent_tau, ema=params.agent_ema))
        name = "prune.rigl"
        net = train_sparse_from_scratch(name, model, params, ctx, cbs)
        if params.agent:
            ctx.log[name]["agent_tau"] = list(cbs[1].taus)
        return net

    def prepare(self, model: nn.Module, params: RigLMethodParams) -> nn.Module:
        model = copy.deepcopy(model)
        attach_ones(model, select_layers(model))
        return model
