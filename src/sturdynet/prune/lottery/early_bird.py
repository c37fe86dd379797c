"""Early-bird ticket detection as a training callback.

You et al., "Drawing Early-Bird Tickets" (arXiv 1909.11957): at the end of every epoch
draw the pruning mask the current weights would give at the target pruning ratio,
measure the normalised Hamming distance to the previous epoch's mask, keep the last
``window`` distances in a FIFO queue (l = 5 in the paper) and stop dense training once
all of them are below ``threshold`` (epsilon = 0.1): the ticket has been drawn.

The paper's masks are channel masks from the batch-norm scaling factors
(``criterion: bn``, network slimming). ``criterion: magnitude`` draws unstructured
global (or layer-wise) magnitude masks over the conv and linear weights instead, which
is what ``prune.imp``'s early-bird option uses.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Literal, Optional

import torch
from torch import Tensor, nn

from ...core.params import rng
from ...core.registry import CALLBACKS
from ...core.callbacks import Callback, TrainState
from ..base import global_keep, select_layers
from .common import magnitude_masks


def mask_distance(a: List[Tensor], b: List[Tensor]) -> float:
    """Normalised Hamming distance: the fraction of positions where two masks differ."""
    if len(a) != len(b):
        raise ValueError(f"mask lists differ in length ({len(a)} vs {len(b)})")
    total, diff = 0, 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise ValueError(f"mask shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        total += x.numel()
        diff += int((x.bool() != y.bool()).sum())
    if total == 0:
        raise ValueError("cannot compare empty masks")
    return diff / total


def bn_channel_masks(model: nn.Module, sparsity: float) -> List[Tensor]:
    """Channel keep-masks pruning the globally smallest |gamma| of all batch-norm layers."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
    if not bns:
        raise ValueError("criterion 'bn' needs batch-norm layers with a learnable scale")
    scores = [m.weight.detach().abs().flatten() for m in bns]
    total = sum(s.numel() for s in scores)
    return global_keep(scores, int(round(sparsity * total)))


@dataclass(frozen=True)
class EarlyBirdParams:
    sparsity: float = rng(0, 1, "()", default=0.5)
    threshold: float = rng(0, 1, "(]", default=0.1)
    window: int = rng(1, None, default=5)
    criterion: Literal["magnitude", "bn"] = "magnitude"
    scope: Literal["global", "layerwise"] = "global"
    include_first: bool = True
    include_last: bool = True


@CALLBACKS.register("early_bird", params=EarlyBirdParams)
class EarlyBird(Callback):
    """Stops training (``state.stop``) when successive epoch masks stop changing.

    After training, ``drawn_epoch`` is the 1-based epoch at which the ticket was drawn
    (None if never), ``mask`` the drawn mask and ``distances`` every distance measured.
    The per-epoch log gets ``eb_distance``.
    """

    def __init__(self, sparsity: float = 0.5, threshold: float = 0.1, window: int = 5,
                 criterion: str = "magnitude", scope: str = "global", include_first: bool = True,
                 include_last: bool = True) -> None:
        if not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if criterion not in ("magnitude", "bn"):
            raise ValueError(f"criterion must be 'magnitude' or 'bn', got {criterion!r}")
        self.sparsity, self.threshold, self.window = sparsity, threshold, window
        self.criterion, self.scope = criterion, scope
        self.include_first, self.include_last = include_first, include_last
        self.queue: Deque[float] = deque(maxlen=window)
        self.distances: List[float] = []
        self.prev: Optional[List[Tensor]] = None
        self.mask: Optional[List[Tensor]] = None
        self.drawn_epoch: Optional[int] = None

    def current_mask(self, model: nn.Module) -> List[Tensor]:
        """The mask the model's weights give now."""
        with torch.no_grad():
            if self.criterion == "bn":
                return [m.cpu() for m in bn_channel_masks(model, self.sparsity)]
            layers = select_layers(model, self.include_first, self.include_last)
            return [m.cpu() for m in magnitude_masks(layers, self.sparsity, self.scope)]

    def update(self, mask: List[Tensor]) -> bool:
        """Feed one epoch's mask; True when the ticket is drawn."""
        if self.prev is not None:
            d = mask_distance(self.prev, mask)
            self.distances.append(d)
            self.queue.append(d)
        self.prev = mask
        return len(self.queue) == self.window and max(self.queue) < self.threshold

    def on_epoch_end(self, state: TrainState) -> None:
        if self.drawn_epoch is not None:
            return
        drawn = self.update(self.current_mask(state.model))
        if self.distances:
            state.log["eb_distance"] = self.distances[-1]
        if drawn:
            self.drawn_epoch = state.epoch + 1
            self.mask = self.prev
            state.log["eb_drawn"] = 1.0
            state.stop = True
