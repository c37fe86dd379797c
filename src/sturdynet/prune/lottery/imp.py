"""Iterative magnitude pruning with rewinding: the lottery-ticket procedure.

Frankle & Carbin, "The Lottery Ticket Hypothesis" (arXiv 1803.03635): train the dense
network from its initialisation theta_0, prune p% of the remaining weights by
magnitude, reset the surviving weights to theta_0, and repeat for N rounds. Frankle et
al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis" (arXiv 1912.05671):
reset to the weights theta_k after k training steps instead (k = 0 is the original
ticket), which keeps tickets of deeper networks trainable.

Procedure here (round 0 is the dense run):

1. start from the initial weights (``ctx.init_state`` when the runner supplies it,
   otherwise a seeded re-initialisation, see :mod:`.common`), train ``epochs`` epochs,
   recording theta_k after ``rewind_step`` steps (or ``rewind_epoch`` epochs);
   optionally stop the dense run early when an early-bird ticket is drawn
   (You et al., arXiv 1909.11957, see :mod:`.early_bird`);
2. for r = 1..N: prune to the cumulative sparsity ``1 - (1 - rate)^r`` by magnitude
   (global or layer-wise; weights pruned before stay pruned), rewind the weights
   (not the masks) to theta_k, train ``epochs`` epochs with the masks applied.

Deviation: every round trains ``epochs`` epochs from theta_k with the full learning-rate
schedule, rather than resuming the schedule at step k (negligible for small k).
Batch-norm statistics are rewound with the weights.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, Optional

from torch import nn

from ...core.method import TrainingContext, TrainingMethod, require_training
from ...core.params import ConfigError, rng
from ...core.registry import METHODS
from ..base import attach_ones, select_layers
from .common import RewindRecorder, initial_state, magnitude_masks, rewind, round_sparsity, set_masks, train
from .early_bird import EarlyBird


@dataclass(frozen=True)
class IMPParams:
    """``rate`` is the fraction of the remaining weights pruned per round; give
    ``sparsity`` instead to reach that final sparsity in exactly ``rounds`` rounds."""

    rounds: int = rng(1, None, default=3)
    rate: Optional[float] = rng(0, 1, "()", default=None)
    sparsity: Optional[float] = rng(0, 1, "()", default=None)
    rewind_step: int = rng(0, None, default=0)
    rewind_epoch: Optional[float] = rng(0, None, default=None)
    epochs: Optional[int] = rng(1, None, default=None)
    scope: Literal["global", "layerwise"] = "global"
    include_first: bool = True
    include_last: bool = True
    early_bird: bool = False
    eb_threshold: float = rng(0, 1, "(]", default=0.1)
    eb_window: int = rng(1, None, default=5)

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.sparsity is None):
            raise ConfigError("rate", "give exactly one of 'rate' (per round) or 'sparsity' (final)")
        if self.rewind_step and self.rewind_epoch is not None:
            raise ConfigError("rewind_epoch", "give either rewind_step or rewind_epoch, not both")

    @property
    def per_round(self) -> float:
        """The fraction of remaining weights each round removes."""
        if self.rate is not None:
            return self.rate
        return 1.0 - (1.0 - self.sparsity) ** (1.0 / self.rounds)


@METHODS.register("prune.imp", params=IMPParams)
class IterativeMagnitudePruning(TrainingMethod):
    """Lottery-ticket IMP with rewinding (arXiv 1803.03635, 1912.05671); see the module doc.

    ``ctx.log`` receives per-round sparsity, validation accuracy and the steps at which
    the dense run stopped (early bird) and the weights were recorded.
    """

    def apply(self, model: nn.Module, params: IMPParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "prune.imp")
        epochs = params.epochs or ctx.train.epochs
        if epochs < 1:
            raise ValueError("prune.imp needs at least one training epoch per round")
        net = copy.deepcopy(model)
        rewind(_strip_masks(net), initial_state(model, ctx))
        layers = select_layers(net, params.include_first, params.include_last)
        if not layers:
            raise ValueError("the model has no conv or linear layer to prune")
        spe = _steps_per_epoch(ctx)
        k = params.rewind_step if params.rewind_epoch is None else int(round(params.rewind_epoch * spe))
        recorder = RewindRecorder(k)
        cbs = [recorder]
        eb = None
        if params.early_bird:
            eb = EarlyBird(sparsity=params.per_round, threshold=params.eb_threshold, window=params.eb_window,
                           criterion="magnitude", scope=params.scope, include_first=params.include_first,
                           include_last=params.include_last)
            cbs.append(eb)
        history = train(net, ctx, epochs, ctx.seed, cbs)
        if recorder.state is None:
            raise ValueError(f"rewind step {k} was not reached: the dense run stopped after "
                             f"{len(history)} epochs (lower rewind_step or disable early_bird)")
        theta_k = recorder.state
        rounds = [{"round": 0, "sparsity": 0.0, "val_accuracy": _last(history, "val_accuracy"),
                   "epochs": len(history)}]
        if eb is not None:
            rounds[0]["early_bird_epoch"] = eb.drawn_epoch
        for r in range(1, params.rounds + 1):
            target = round_sparsity(params.per_round, r)
            set_masks(layers, magnitude_masks(layers, target, params.scope))
            rewind(net, theta_k)
            history = train(net, ctx, epochs, ctx.seed + r)
            rounds.append({"round": r, "sparsity": target, "val_accuracy": _last(history, "val_accuracy"),
                           "epochs": len(history)})
        ctx.log["imp"] = {"rewind_step": k, "rate": params.per_round, "rounds": rounds}
        return net

    def prepare(self, model: nn.Module, params: IMPParams) -> nn.Module:
        model = copy.deepcopy(model)
        attach_ones(model, select_layers(model, params.include_first, params.include_last))
        return model


def _strip_masks(model: nn.Module) -> nn.Module:
    from ...core.masks import remove_masks

    remove_masks(model)
    return model


def _steps_per_epoch(ctx: Any) -> int:
    n = len(ctx.data.train)
    return max(1, -(-n // ctx.train.batch_size))


def _last(history: list, key: str) -> Optional[float]:
    for row in reversed(history or []):
        if key in row:
            return float(row[key])
    return None
