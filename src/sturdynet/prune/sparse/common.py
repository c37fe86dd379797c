"""Shared machinery of dynamic sparse training: schedules, random sparse masks, the
drop-and-grow callback base, optimizer-state reset, and the sparse-from-scratch method.

A dynamic-sparse-training callback works on the ``<param>_mask`` buffers already in the
model (:mod:`sturdynet.core.masks`); the training loop zeroes masked weights after every
optimizer step. Every ``interval`` steps until ``t_end`` of training, each masked layer
drops the ``f(t)`` fraction of its active weights with the smallest magnitude and grows
as many at inactive positions (the subclass chooses where). A layer's number of active
weights never changes.

Update timing inside the loop: the gradient of the step that completes update step t is
read in ``on_after_backward`` (the dense gradient: masks zero weights, not gradients);
the mask changes in ``on_step_end``, after the optimizer step and the loop's mask
application, so the drop criterion sees the current weights. Newly grown weights start
at exactly zero and their optimizer state (SGD momentum, Adam moments) is zeroed; a
weight dropped and regrown in the same update keeps its value (as in RigL's code).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...core.callbacks import Callback, TrainState
from ...core.method import require_training
from ..base import kth_smallest, select_layers
from ..erk import counts_from_densities, layer_densities
from ...core.masks import attach_mask, iter_masks


def drop_fraction(step: int, alpha: float, end: int, decay: str = "cosine") -> float:
    """The fraction of active weights to replace at ``step``.

    ``cosine``: ``alpha / 2 * (1 + cos(pi * step / end))`` (RigL, arXiv 1911.11134, eq. 1);
    ``constant``: ``alpha``. Zero from ``end`` on.
    """
    if end <= 0 or step >= end:
        return 0.0
    if decay == "cosine":
        return alpha / 2.0 * (1.0 + math.cos(math.pi * step / end))
    if decay == "constant":
        return alpha
    raise ValueError(f"decay must be 'cosine' or 'constant', got {decay!r}")


def random_sparse_masks(shapes: Sequence[torch.Size], sparsity: float, distribution: str, generator: torch.Generator,
                        dense_first: bool = False) -> List[Tensor]:
    """Random keep-masks with ``distribution`` (uniform / erk / er) layer densities.

    Exactly ``counts_from_densities`` weights are kept per layer, at positions drawn
    uniformly without replacement from ``generator``.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    dens = layer_densities([tuple(s) for s in shapes], 1.0 - sparsity, distribution, dense=[0] if dense_first else None)
    sizes = [math.prod(s) for s in shapes]
    counts = counts_from_densities(sizes, dens)
    out = []
    for s, n, c in zip(shapes, sizes, counts):
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=generator)[:c]] = True
        out.append(keep.view(s))
    return out


@torch.no_grad()
def reset_optimizer_state(optimizer: torch.optim.Optimizer, param: Tensor, positions: Tensor) -> None:
    """Zero the optimizer's per-weight state (momentum, Adam moments) at ``positions``."""
    st = optimizer.state.get(param)
    if not st:
        return
    for key in ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        buf = st.get(key)
        if isinstance(buf, Tensor) and buf.shape == param.shape:
            buf[positions] = 0


def drop_and_grow(weight: Tensor, mask: Tensor, k: int, grow_score: Tensor) -> Tuple[Tensor, int]:
    """One layer's update: drop the ``k`` smallest active |w|, grow the ``k`` best-scored
    positions among those not active after the drop (just-dropped ones included).

    Returns the new mask and the number of weights it grows at previously inactive positions.
    """
    flat_m = mask.flatten().bool()
    n_active = int(flat_m.sum())
    k = min(k, n_active)
    if k <= 0:
        return mask.clone().bool(), 0
    mag = weight.detach().abs().flatten().float()
    mag = torch.where(flat_m, mag, torch.full_like(mag, float("inf")))
    dropped = kth_smallest(mag, k)
    after = flat_m.clone()
    after[dropped] = False
    g = grow_score.flatten().float().to(mag.device)
    g = torch.where(after, torch.full_like(g, -float("inf")), g)
    grown = torch.sort(g, descending=True, stable=True).indices[:k]
    new = after.clone()
    new[grown] = True
    return new.view_as(mask), int((new & ~flat_m).sum())


class DynamicSparseCallback(Callback):
    """Base: schedule + per-layer drop-and-grow; subclasses give :meth:`grow_score`.

    Args:
        alpha: initial drop fraction.
        interval: steps between updates (None: once per epoch).
        t_end: fraction of training after which the mask is frozen.
        decay: ``cosine`` or ``constant`` drop-fraction schedule.
        seed: seed of the callback's own generator (None: the training generator's seed).
    """

    needs_grad = False

    def __init__(self, alpha: float = 0.3, interval: Optional[int] = 100, t_end: float = 0.75,
                 decay: str = "cosine", seed: Optional[int] = None) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if interval is not None and interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if not 0.0 < t_end <= 1.0:
            raise ValueError(f"t_end must be in (0, 1], got {t_end}")
        if decay not in ("cosine", "constant"):
            raise ValueError(f"decay must be 'cosine' or 'constant', got {decay!r}")
        self.alpha, self.interval, self.t_end, self.decay, self.seed = alpha, interval, t_end, decay, seed
        self.updates: List[Dict[str, Any]] = []
        self._grads: Optional[Dict[int, Tensor]] = None

    def on_train_begin(self, state: TrainState) -> None:
        self.layers = [(m, p, mask) for _, m, p, mask in iter_masks(state.model)]
        if not self.layers:
            raise ValueError(f"{type(self).__name__} needs masked layers (attach masks, e.g. with prune.rigl / prune.set)")
        self.every = self.interval or max(1, state.steps_per_epoch)
        self.end = int(self.t_end * state.total_steps)
        seed = self.seed if self.seed is not None else state.generator.initial_seed() + 104729
        self.gen = torch.Generator().manual_seed(int(seed))

    def due(self, step: int) -> bool:
        """Whether the mask is updated once ``step`` optimizer steps are done."""
        return step > 0 and step % self.every == 0 and step < self.end

    def grow_score(self, module: nn.Module, param: str, grad: Optional[Tensor]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def on_after_backward(self, state: TrainState) -> None:
        if self.needs_grad and self.due(state.step + 1):
            self._grads = {}
            for m, p, _ in self.layers:
                g = getattr(m, p).grad
                if g is None:
                    raise ValueError(f"no gradient for a masked {type(m).__name__}.{p}: is it trainable?")
                self._grads[id(m)] = g.detach().clone()

    @torch.no_grad()
    def on_step_end(self, state: TrainState) -> None:
        if not self.due(state.step):
            return
        frac = drop_fraction(state.step, self.alpha, self.end, self.decay)
        dropped_total, grown_new = 0, 0
        for i, (m, p, _) in enumerate(self.layers):
            mask = m._buffers[p + "_mask"]
            w = getattr(m, p)
            k = int(round(frac * int(mask.sum())))
            grad = self._grads.get(id(m)) if self._grads is not None else None
            new, n_new = drop_and_grow(w, mask, k, self.grow_score(m, p, grad))
            changed = new != mask.bool()
            w[new & ~mask.bool()] = 0.0
            attach_mask(m, p, new)
            reset_optimizer_state(state.optimizer, w, changed)
            self.layers[i] = (m, p, new)
            dropped_total += min(k, int(mask.sum()))
            grown_new += n_new
        self._grads = None
        self.updates.append({"step": state.step, "drop_fraction": frac, "replaced": dropped_total,
                             "grown_new": grown_new})
        state.log["dst_updates"] = float(len(self.updates))


def train_sparse_from_scratch(method_name: str, model: nn.Module, params: Any, ctx: Any,
                              callbacks: Sequence[Callback]) -> nn.Module:
    """Shared body of ``prune.set`` / ``prune.rigl``: initial weights (``from_scratch``),
    a random ERK/uniform mask at ``params.sparsity``, then training with ``callbacks``."""
    from ..lottery.common import initial_state, rewind, set_masks, train
    from ...core.masks import remove_masks

    require_training(ctx, method_name)
    net = copy.deepcopy(model)
    remove_masks(net)
    if params.from_scratch:
        rewind(net, initial_state(model, ctx))
    layers = select_layers(net)
    if not layers:
        raise ValueError("the model has no conv or linear layer to make sparse")
    gen = torch.Generator().manual_seed(int(ctx.seed))
    masks = random_sparse_masks([m.weight.shape for _, m in layers], params.sparsity, params.distribution, gen,
                                dense_first=params.dense_first)
    set_masks(layers, masks)
    epochs = params.epochs or ctx.train.epochs
    history = train(net, ctx, epochs, ctx.seed, callbacks)
    main = callbacks[0]
    ctx.log[method_name] = {"updates": getattr(main, "updates", []),
                            "val_accuracy": next((h["val_accuracy"] for h in reversed(history)
                                                  if "val_accuracy" in h), None)}
    return net
