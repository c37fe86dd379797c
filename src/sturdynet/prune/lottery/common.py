"""Shared machinery of the lottery-ticket methods: initial weights, rewinding, training,
magnitude masks that respect earlier pruning.

A lottery-ticket method needs the network's weights *before* training (or at an early
step k). :func:`initial_state` takes them from the compression context when the runner
supplies them (``ctx.init_state``, the base model's state_dict right after construction)
and otherwise re-initialises a copy of the model with ``reset_parameters()`` under
``ctx.seed``. :class:`RewindRecorder` captures the state at step k of a training run.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...core.callbacks import Callback, TrainState
from ...core.method import TrainingContext
from ..base import current_mask, global_keep, kth_smallest
from ...core.masks import SUFFIX, attach_mask

State = Dict[str, Tensor]


def weights_state(model: nn.Module) -> State:
    """A detached clone of the model's state_dict without its masks."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(SUFFIX)}


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every ``reset_parameters()`` re-run under ``seed``.

    Buffers that the layers reset themselves (batch-norm statistics) are reset too.
    Masks are dropped: the copy is dense.
    """
    out = copy.deepcopy(model)
    for _, m in list(out.named_modules()):
        for b in [b for b in m._buffers if b.endswith(SUFFIX)]:
            del m._buffers[b]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in out.modules():
            fn = getattr(m, "reset_parameters", None)
            if callable(fn):
                fn()
            stats = getattr(m, "reset_running_stats", None)
            if callable(stats):
                stats()
    return out


def initial_state(model: nn.Module, ctx: Any) -> State:
    """The weights a lottery ticket rewinds to at step 0.

    Uses ``ctx.init_state`` when the runner provides it (the base model's initial
    state_dict); otherwise a seeded re-initialisation of ``model`` (``ctx.seed``).
    """
    given = getattr(ctx, "init_state", None)
    if given is not None:
        return {k: v.detach().clone() for k, v in given.items() if not k.endswith(SUFFIX)}
    return weights_state(reinitialize(model, int(getattr(ctx, "seed", 0))))


@torch.no_grad()
def rewind(model: nn.Module, state: State) -> None:
    """Load ``state`` (weights and buffers, no masks) into ``model`` in place, then
    re-apply the model's masks so pruned positions stay zero."""
    own = model.state_dict()
    missing = [k for k in own if not k.endswith(SUFFIX) and k not in state]
    if missing:
        raise ValueError(f"rewind state lacks {len(missing)} entries, e.g. {missing[0]!r}")
    for k, v in state.items():
        if k not in own:
            raise ValueError(f"rewind state has unknown entry {k!r}")
        own[k].copy_(v)
    for _, m in model.named_modules():
        for b, mask in m._buffers.items():
            if b.endswith(SUFFIX) and mask is not None:
                getattr(m, b[: -len(SUFFIX)]).mul_(mask)


class RewindRecorder(Callback):
    """Records the model state after ``step`` optimizer steps (``step=0``: before any).

    Frankle et al., arXiv 1912.05671: rewinding to an early iteration k rather than to
    initialisation keeps deeper networks' tickets trainable.
    """

    def __init__(self, step: int) -> None:
        if step < 0:
            raise ValueError(f"rewind step must be >= 0, got {step}")
        self.step = step
        self.state: Optional[State] = None

    def on_train_begin(self, state: TrainState) -> None:
        if self.step > state.total_steps:
            raise ValueError(f"rewind step {self.step} is beyond the {state.total_steps} training steps")
        if self.step == 0:
            self.state = weights_state(state.model)

    def on_step_end(self, state: TrainState) -> None:
        if self.state is None and state.step == self.step:
            self.state = weights_state(state.model)


def train(model: nn.Module, ctx: TrainingContext, epochs: int, seed: int, callbacks: Sequence[Callback] = (),
          data: Any = None) -> List[dict]:
    """Train ``model`` in place with the run's training config for ``epochs`` epochs
    through ``ctx.fit``.

    ``data`` replaces ``ctx.data`` (COLT trains on partitions) and is trained with
    ``seed``; on the run's own data ``ctx.fit`` uses the context's seed.
    """
    cfg = dataclasses.replace(ctx.train, epochs=int(epochs))
    if data is None:
        return ctx.fit(model, cfg, callbacks=list(callbacks))
    return ctx.fit(model, cfg, callbacks=list(callbacks), data=data, seed=seed)


def masked_scores(layers: Sequence[Tuple[str, nn.Module]]) -> List[Tensor]:
    """|w| per layer with already-pruned positions scored -1, so they are removed first."""
    out = []
    for _, m in layers:
        s = m.weight.detach().abs().float().clone()
        s[~current_mask(m)] = -1.0
        out.append(s.flatten())
    return out


def magnitude_masks(layers: Sequence[Tuple[str, nn.Module]], sparsity: float, scope: str = "global",
                    scores: Optional[Sequence[Tensor]] = None) -> List[Tensor]:
    """Keep-masks reaching ``sparsity`` over ``layers`` by magnitude; earlier pruning is kept.

    Args:
        layers: (name, module) pairs with a ``weight``.
        sparsity: the total fraction of zeros to reach (cumulative, not per round).
        scope: ``global`` (one threshold over all layers, exactly ``round(sparsity * N)``
            removed) or ``layerwise`` (``round(sparsity * n_l)`` removed in every layer).
        scores: per-layer flat scores to use instead of :func:`masked_scores`.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    scores = list(scores) if scores is not None else masked_scores(layers)
    if scope == "global":
        total = sum(s.numel() for s in scores)
        flat = global_keep(scores, int(round(sparsity * total)))
    elif scope == "layerwise":
        flat = []
        for s in scores:
            keep = torch.ones(s.numel(), dtype=torch.bool, device=s.device)
            keep[kth_smallest(s.flatten(), int(round(sparsity * s.numel())))] = False
            flat.append(keep)
    else:
        raise ValueError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    return [k.view_as(m.weight) for k, (_, m) in zip(flat, layers)]


def set_masks(layers: Sequence[Tuple[str, nn.Module]], masks: Sequence[Tensor]) -> None:
    """Attach one weight mask per layer (zeroing the pruned weights)."""
    if len(layers) != len(masks):
        raise ValueError(f"{len(layers)} layers but {len(masks)} masks")
    for (_, m), k in zip(layers, masks):
        attach_mask(m, "weight", k.to(torch.bool))


def round_sparsity(rate: float, rounds_done: int) -> float:
    """Cumulative sparsity after ``rounds_done`` rounds that each prune ``rate`` of what is left."""
    return 1.0 - (1.0 - rate) ** rounds_done
