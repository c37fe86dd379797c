"""Shared machinery of adversarial training: crafting in eval mode, eps-ball audit.

Every method is a training callback (registered in ``ADVERSARIAL``) that replaces the
clean batch by adversarial examples in ``on_batch_begin`` or supplies its own loss in
``compute_loss``. Examples are crafted with the model in eval mode (batch-norm uses its
running statistics, as in the TRADES reference implementation) and the model's mode is
restored before the training step. Quantized and binary models are attacked through
their straight-through estimators (``grad_mode: auto`` -> ``ste`` when the model has
quantizers), since their true gradients are zero almost everywhere.

Each batch's examples are checked to lie in the eps-ball and in [0, 1]; the largest
perturbation seen in an epoch is logged as ``adv_max_linf``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ...core.tensors import eval_mode
from ...core.params import rng
from ...quant.grad_mode import gradient_mode, has_estimators
from ...core.callbacks import Callback, TrainState


@dataclass(frozen=True)
class AdvParams:
    """Fields shared by the adversarial-training methods (L-inf threat model)."""

    eps: float = rng(0, 1, "[]", default=8 / 255)
    steps: int = rng(1, None, default=10)
    alpha: Optional[float] = rng(0, None, "(]", default=None)
    grad_mode: Literal["auto", "true", "ste"] = "auto"


def resolve_grad_mode(model: nn.Module, mode: str) -> Optional[str]:
    if mode == "auto":
        return "ste" if has_estimators(model) else None
    return mode


class AdversarialCallback(Callback):
    """Base class: subclasses implement :meth:`craft` (and may override ``compute_loss``)."""

    def __init__(self, eps: float = 8 / 255, steps: int = 10, alpha: Optional[float] = None,
                 grad_mode: str = "auto") -> None:
        self.eps = float(eps)
        self.steps = steps
        self.alpha = alpha
        self.grad_mode = grad_mode
        self._max = 0.0
        self.clean_x: Optional[Tensor] = None

    def eps_map(self, state: TrainState, x: Tensor) -> Tensor | float:
        """The per-pixel budget (a float for a uniform budget)."""
        return self.eps

    def craft(self, state: TrainState, x: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextlib.contextmanager
    def crafting(self, model: nn.Module):
        """Eval mode and the right gradient estimator while examples are crafted."""
        mode = resolve_grad_mode(model, self.grad_mode)
        ctx = gradient_mode(model, mode) if mode and has_estimators(model) else contextlib.nullcontext()
        with eval_mode(model), ctx:  # every submodule's own train/eval flag comes back
            yield

    def on_epoch_begin(self, state: TrainState) -> None:
        self._max = 0.0

    def on_batch_begin(self, state: TrainState) -> None:
        x, y = state.x, state.y
        with self.crafting(state.model):
            x_adv = self.craft(state, x, y).detach()
        budget = self.eps_map(state, x)
        delta = (x_adv - x).abs()
        limit = budget if isinstance(budget, float) else budget.expand_as(delta)
        if torch.any(delta > limit + 1e-6) or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
            raise AssertionError(f"{type(self).__name__}: training examples left the eps-ball or [0, 1]")
        self._max = max(self._max, float(delta.max()) if delta.numel() else 0.0)
        self.clean_x = x
        state.x = x_adv

    def on_epoch_end(self, state: TrainState) -> None:
        state.log["adv_max_linf"] = self._max
