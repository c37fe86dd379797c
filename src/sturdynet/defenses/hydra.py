"""HYDRA: pruning adversarially robust networks (Sehwag et al., arXiv 2002.10509).

1. Every conv/linear weight tensor W gets an importance-score tensor S, initialised
   by the paper's scaled rule S = sqrt(6 / fan_in) * W / max|W|.
2. With the weights frozen, the scores are trained under the robust loss (the
   adversarial method of ``adversarial``, else the run's ``train.adversarial``, else
   plain cross-entropy): the layer computes with W * M where M keeps the top-k |S| of
   each layer (k = round((1 - sparsity) * n)); the mask's gradient goes straight
   through to |S| (S receives it times sign(S), as in the authors' code).
3. The final masks (top-k per layer) are attached as pruning masks; the variant's
   ``finetune_epochs`` (with its ``finetune: {adversarial: ...}``) then trains the
   weights with the mask fixed, as the paper's fine-tuning stage.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..core.method import TrainingContext, TrainingMethod, require_training
from ..core.params import Component, rng
from ..prune.base import select_layers
from ..core.masks import attach_mask
from ..core.registry import METHODS
from ..train.config import parse_adversarial


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` largest |scores| (ties broken by position)."""
    flat = scores.detach().abs().flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    return keep.view_as(scores)


class _TopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: Tensor, k: int) -> Tensor:  # type: ignore[override]
        return topk_mask(scores, k).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class ScoreMask(nn.Module):
    """Parametrization W -> W * topk(|S|): trains the scores S, not W."""

    def __init__(self, weight: Tensor, density: float) -> None:
        super().__init__()
        fan_in = weight[0].numel()
        scale = math.sqrt(6.0 / fan_in) / weight.detach().abs().max().clamp_min(1e-12)
        self.scores = nn.Parameter(weight.detach() * scale)
        self.k = int(round(density * weight.numel()))

    def forward(self, w: Tensor) -> Tensor:
        # The mask ranks |S|: the straight-through gradient reaches S through abs (times sign(S)),
        # as in the paper's code; passing it to S directly would push negative scores the wrong way.
        return w * _TopK.apply(self.scores.abs(), self.k)


@dataclass(frozen=True)
class HydraParams:
    sparsity: float = rng(0, 1, "[)", default=0.9)
    score_epochs: int = rng(0, None, default=5)
    score_lr: float = rng(0, None, "(]", default=0.1)
    adversarial: Optional[Component] = field(default=None, metadata={"parse": parse_adversarial})
    include_first: bool = True
    include_last: bool = True


@METHODS.register("prune.hydra", params=HydraParams)
class Hydra(TrainingMethod):
    """Learn per-layer top-k masks under the robust loss with frozen weights."""

    def _layers(self, model: nn.Module, params: HydraParams) -> List[Tuple[str, nn.Module]]:
        return select_layers(model, params.include_first, params.include_last)

    def prepare(self, model: nn.Module, params: HydraParams) -> nn.Module:
        model = copy.deepcopy(model)
        for _, m in self._layers(model, params):
            attach_mask(m, "weight", torch.ones_like(m.weight, dtype=torch.bool))
        return model

    def learn_scores(self, model: nn.Module, params: HydraParams, ctx: TrainingContext) -> List[Tensor]:
        """Attach score parametrizations, train the scores, return the final masks."""
        layers = self._layers(model, params)
        density = 1.0 - params.sparsity
        frozen = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        for _, m in layers:
            parametrize.register_parametrization(m, "weight", ScoreMask(m.weight, density))
        try:
            if params.score_epochs > 0:
                adv = params.adversarial if params.adversarial is not None else ctx.train.adversarial
                cfg = dataclasses.replace(ctx.train, epochs=params.score_epochs, lr=params.score_lr,
                                          adversarial=adv, callbacks=(), warmup_epochs=0.0)
                hist = ctx.fit(model, cfg)
                ctx.log["hydra_scores"] = hist
            masks = [topk_mask(m.parametrizations.weight[0].scores, m.parametrizations.weight[0].k)
                     for _, m in layers]
        finally:
            for _, m in layers:
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            for p, req in frozen:
                p.requires_grad_(req)
        return masks

    def apply(self, model: nn.Module, params: HydraParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "prune.hydra")
        model = copy.deepcopy(model)
        masks = self.learn_scores(model, params, ctx)
        for (_, m), keep in zip(self._layers(model, params), masks):
            attach_mask(m, "weight", keep)
        return model
