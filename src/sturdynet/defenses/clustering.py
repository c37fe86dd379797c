"""Piece-wise clustering against the Bit-Flip Attack (He, Rakin, Li, Chakrabarti and Fan,
"Defending and Harnessing the Bit-Flip based Adversarial Weight Attack", CVPR 2020).

The paper relaxes binarization-aware training into a training penalty that pulls each
layer's positive weights towards their mean and its negative weights towards theirs,
so the weight distribution becomes two tight clusters at about ``+-mean|w|``:

    L = CE + lambda * sum_l ( ||W_l+ - mean(W_l+)||^2 + ||W_l- - mean(W_l-)||^2 )

With two clusters, quantized weights sit far from zero and a single bit flip moves a
weight by a smaller fraction of the layer's range relative to its neighbours, so BFA
needs many more flips (paper: 19.3x on ResNet-20).

:class:`PiecewiseClustering` (callback ``piecewise_clustering``) adds the penalty's exact
gradient, ``2 lambda (w - mean)`` for each weight of the cluster it belongs to (the
mean's own gradient sums to zero), to every conv/linear weight gradient after backward,
so it composes with any loss (adversarial training included). The method
``faults.clustering`` fine-tunes a model with it. Deviation: exact zeros (pruned weights)
belong to neither cluster (the authors' code puts them in both).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..core.method import TrainingContext, TrainingMethod, require_training
from ..core.params import Component, rng
from ..core.registry import CALLBACKS, METHODS
from ..core.callbacks import Callback, TrainState
from ..faults.bitview import weight_layers


def cluster_terms(w: Tensor):
    """(penalty, gradient) of ``||W+ - mean W+||^2 + ||W- - mean W-||^2`` for one tensor."""
    w = w.detach()
    pen = w.new_zeros(())
    grad = torch.zeros_like(w)
    for sel in (w > 0, w < 0):
        if bool(sel.any()):
            d = w[sel] - w[sel].mean()
            pen = pen + (d * d).sum()
            grad[sel] = 2.0 * d
    return pen, grad


def clustering_penalty(model: nn.Module) -> Tensor:
    """The summed penalty over every conv/linear weight (without lambda)."""
    total = torch.zeros(())
    for _, m in weight_layers(model):
        total = total + cluster_terms(m.weight)[0].cpu()
    return total


@dataclass(frozen=True)
class ClusteringParams:
    strength: float = rng(0, None, "(]", default=1e-3)


@CALLBACKS.register("piecewise_clustering", params=ClusteringParams)
class PiecewiseClustering(Callback):
    """Adds ``strength * d(penalty)/dw`` to each conv/linear weight gradient after backward."""

    def __init__(self, strength: float = 1e-3) -> None:
        if strength <= 0:
            raise ValueError(f"strength must be > 0, got {strength}")
        self.strength = float(strength)

    @torch.no_grad()
    def on_after_backward(self, state: TrainState) -> None:
        total = 0.0
        for _, m in weight_layers(state.model):
            w = m.weight
            if not w.requires_grad:
                continue
            pen, g = cluster_terms(w)
            total += float(pen)
            if w.grad is None:
                w.grad = self.strength * g
            else:
                w.grad.add_(g, alpha=self.strength)
        state.log["clustering_penalty"] = total


@dataclass(frozen=True)
class ClusteringMethodParams:
    strength: float = rng(0, None, "(]", default=1e-3)
    epochs: int = rng(1, None, default=5)
    lr: Optional[float] = rng(0, None, "(]", default=None)


@METHODS.register("faults.clustering", params=ClusteringMethodParams)
class Clustering(TrainingMethod):
    """Fine-tune with the piece-wise clustering penalty (the run's training settings at a
    tenth of the learning rate unless ``lr`` is given); quantize afterwards
    (e.g. ``steps: [{method: faults.clustering}, {method: quant.uniform, bits: 8}]``)."""

    def prepare(self, model: nn.Module, params: ClusteringMethodParams) -> nn.Module:
        return copy.deepcopy(model)

    def apply(self, model: nn.Module, params: ClusteringMethodParams,
              ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "faults.clustering")
        model = self.prepare(model, params)
        cfg = ctx.train
        cb = Component("piecewise_clustering", ClusteringParams(params.strength))
        cfg = dataclasses.replace(cfg, epochs=params.epochs, lr=params.lr if params.lr is not None else cfg.lr * 0.1,
                                  warmup_epochs=0.0, callbacks=tuple(cfg.callbacks) + (cb,))
        before = float(clustering_penalty(model))
        history = ctx.fit(model, cfg)
        ctx.log["clustering"] = {"penalty_before": before, "penalty_after": float(clustering_penalty(model)),
                                 "epochs": params.epochs, "strength": params.strength,
                                 "history": history}
        return model.eval()
