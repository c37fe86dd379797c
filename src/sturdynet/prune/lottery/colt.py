"""COLT: Cyclic Overlapping Lottery Tickets.

Hossain et al., arXiv 2212.12770: split the training data into partitions (two in the
paper, by classes: the first and second half of the label set), start one copy of the
network per partition from the same initial weights theta_0, and cycle:

1. train every copy on its own partition;
2. prune every copy by magnitude (``rate`` of its remaining weights; global magnitude
   as in the authors' default);
3. keep only the overlap: the new mask is the intersection of the copies' masks;
4. rewind every copy to theta_0 (weights, not masks) under the shared mask.

Because the intersection removes the union of what the copies pruned, each cycle
prunes more than ``rate`` and the target sparsity comes in fewer rounds than IMP.

Here the cycle stops at ``sparsity``: the round that would pass it instead keeps
exactly ``round((1 - sparsity) * N)`` weights, those whose worse rank over the copies
is best (the intersection of the copies' top-k sets for the smallest k that keeps
enough; ties broken by position). The ticket (theta_0 under the final mask) is then
trained on the full training set for ``final_epochs`` epochs, which gives the model
the compression method returns.

Deviations: the copies keep the full K-way classifier head (labels are not remapped
per partition as in the authors' code); the stop rule hits the target exactly instead
of stopping at the first round past it.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import List, Literal, Optional, Sequence

import torch
from torch import Tensor, nn

from ...core.method import TrainingContext, TrainingMethod, require_training
from ...core.params import rng
from ...data.base import DataBundle, Split, stratified_indices
from ...core.registry import METHODS
from ..base import attach_ones, select_layers
from ...core.masks import remove_masks
from .common import initial_state, magnitude_masks, masked_scores, rewind, set_masks, train


@dataclass(frozen=True)
class COLTParams:
    sparsity: float = rng(0, 1, "()", default=0.9)
    rate: float = rng(0, 1, "()", default=0.2)
    partitions: int = rng(2, None, default=2)
    split: Literal["classes", "random"] = "classes"
    epochs: Optional[int] = rng(1, None, default=None)
    final_epochs: Optional[int] = rng(0, None, default=None)
    scope: Literal["global", "layerwise"] = "global"
    include_first: bool = True
    include_last: bool = True


def partition_data(data: DataBundle, parts: int, split: str, seed: int) -> List[DataBundle]:
    """Split ``data.train`` (and ``data.val``) into ``parts`` disjoint bundles.

    ``classes``: class c goes to partition ``floor(c * parts / K)`` (contiguous blocks
    of the sorted labels, as COLT does); ``random``: stratified random halves/thirds...
    """
    if parts < 2:
        raise ValueError(f"need at least 2 partitions, got {parts}")

    def by_class(s: Split) -> List[Split]:
        k = data.num_classes
        if parts > k:
            raise ValueError(f"cannot split {k} classes into {parts} partitions")
        group = (s.y * parts) // k
        return [Split(s.x[group == p], s.y[group == p]) for p in range(parts)]

    def by_random(s: Split, g: torch.Generator) -> List[Split]:
        out, rest = [], s
        for p in range(parts, 1, -1):
            pick, other = stratified_indices(rest.y, len(rest) // p, g)
            out.append(Split(rest.x[pick], rest.y[pick]))
            rest = Split(rest.x[other], rest.y[other])
        return out + [rest]

    if split == "classes":
        trains, vals = by_class(data.train), by_class(data.val)
    elif split == "random":
        g = torch.Generator().manual_seed(seed)
        trains, vals = by_random(data.train, g), by_random(data.val, g)
    else:
        raise ValueError(f"split must be 'classes' or 'random', got {split!r}")
    for i, t in enumerate(trains):
        if len(t) == 0:
            raise ValueError(f"partition {i} has no training samples")
    return [dataclasses.replace(data, train=t, val=v) for t, v in zip(trains, vals)]


def intersect(masks: Sequence[Sequence[Tensor]]) -> List[Tensor]:
    """Per-layer intersection (logical and) of several models' masks."""
    if not masks:
        raise ValueError("need at least one mask list")
    out = [m.clone().bool() for m in masks[0]]
    for other in masks[1:]:
        if len(other) != len(out):
            raise ValueError("mask lists differ in length")
        out = [a & b.bool() for a, b in zip(out, other)]
    return out


def overlap_keep(scores: Sequence[Tensor], n_keep: int) -> Tensor:
    """Keep exactly ``n_keep`` positions: those whose worst rank over the models is best.

    ``scores`` holds one flat score tensor per model (higher = more important). Ranks are
    0 for each model's largest score; a position's key is its maximum rank over the
    models, ties broken by position. The result is the intersection of the models'
    top-k sets for the smallest k that keeps at least ``n_keep`` positions, trimmed.
    """
    n = scores[0].numel()
    if not 0 <= n_keep <= n:
        raise ValueError(f"cannot keep {n_keep} of {n} positions")
    worst = torch.zeros(n, dtype=torch.long, device=scores[0].device)
    for s in scores:
        order = torch.sort(s.flatten(), descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=order.device)
        worst = torch.maximum(worst, rank)
    keep = torch.zeros(n, dtype=torch.bool, device=worst.device)
    keep[torch.sort(worst, stable=True).indices[:n_keep]] = True
    return keep


def _sparsity(masks: Sequence[Tensor]) -> float:
    total = sum(m.numel() for m in masks)
    return 1.0 - sum(int(m.sum()) for m in masks) / max(1, total)


@METHODS.register("prune.colt", params=COLTParams)
class CyclicOverlappingLotteryTicket(TrainingMethod):
    """COLT (arXiv 2212.12770); see the module docstring. ``ctx.log["colt"]`` gets the
    sparsity after every cycle and the partitions' validation accuracies."""

    def apply(self, model: nn.Module, params: COLTParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "prune.colt")
        epochs = params.epochs or ctx.train.epochs
        final_epochs = epochs if params.final_epochs is None else params.final_epochs
        parts = partition_data(ctx.data, params.partitions, params.split, ctx.seed)
        theta0 = initial_state(model, ctx)
        base = copy.deepcopy(model)
        remove_masks(base)
        rewind(base, theta0)
        layers0 = select_layers(base, params.include_first, params.include_last)
        if not layers0:
            raise ValueError("the model has no conv or linear layer to prune")
        shared = [torch.ones_like(m.weight, dtype=torch.bool) for _, m in layers0]
        sizes = [m.numel() for m in shared]
        total = sum(sizes)
        n_keep_final = int(round((1.0 - params.sparsity) * total))
        cycles = []
        r = 0
        while _sparsity(shared) < params.sparsity and sum(int(m.sum()) for m in shared) > n_keep_final:
            r += 1
            copies = []
            accs = []
            for p, part in enumerate(parts):
                net = copy.deepcopy(base)
                layers = select_layers(net, params.include_first, params.include_last)
                set_masks(layers, shared)
                hist = train(net, ctx, epochs, ctx.seed + 7919 * r + p, data=part)
                accs.append(next((h["val_accuracy"] for h in reversed(hist) if "val_accuracy" in h), None))
                copies.append(layers)
            target = 1.0 - (1.0 - _sparsity(shared)) * (1.0 - params.rate)
            new = intersect([magnitude_masks(ls, target, params.scope) for ls in copies])
            if _sparsity(new) >= params.sparsity:
                new = self._exact(copies, params, n_keep_final)
            shared = new
            cycles.append({"cycle": r, "sparsity": _sparsity(shared), "partition_val_accuracy": accs})
        ticket = copy.deepcopy(base)
        layers = select_layers(ticket, params.include_first, params.include_last)
        set_masks(layers, shared)
        hist = train(ticket, ctx, final_epochs, ctx.seed) if final_epochs > 0 else []
        ctx.log["colt"] = {"cycles": cycles, "final_val_accuracy":
                           next((h["val_accuracy"] for h in reversed(hist) if "val_accuracy" in h), None)}
        return ticket

    @staticmethod
    def _exact(copies, params: COLTParams, n_keep: int) -> List[Tensor]:
        """The final cycle's mask with exactly ``n_keep`` weights (global) or per layer."""
        scores = [masked_scores(ls) for ls in copies]  # per model, per layer
        shapes = [m.weight.shape for _, m in copies[0]]
        if params.scope == "global":
            flat = overlap_keep([torch.cat(s) for s in scores], n_keep)
            return [k.view(sh) for k, sh in zip(torch.split(flat, [s.numel() for s in scores[0]]), shapes)]
        out = []
        for li, sh in enumerate(shapes):
            n = scores[0][li].numel()
            out.append(overlap_keep([s[li] for s in scores], int(round((1.0 - params.sparsity) * n))).view(sh))
        return out

    def prepare(self, model: nn.Module, params: COLTParams) -> nn.Module:
        model = copy.deepcopy(model)
        attach_ones(model, select_layers(model, params.include_first, params.include_last))
        return model
