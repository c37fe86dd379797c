"""Transfer attack: craft adversarial examples on a surrogate, evaluate on the target.

The threat model of a published compressed model (Papernot et al., arXiv 1605.07277):
an attacker who holds a sibling of the deployed model (e.g. the dense model that was
pruned or quantized, or the compressed model published on-device) runs a white-box
attack on it and sends the result to the target. ``Transfer(target, surrogate=...,
attack="pgd", **attack_kwargs)`` runs the named attack on the surrogate (with the
surrogate's own gradient mode) and returns its output unchanged; the target's forward
pass is never used to craft, only to evaluate.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor, nn

from ..core.registry import ATTACKS
from .base import Attack, AttackParams


@dataclass(frozen=True)
class TransferParams(AttackParams):
    """Transfer: ``surrogate`` (the nn.Module the examples are crafted on), ``attack``
    (the registered attack run on it, any but ``transfer``), ``attack_kwargs`` (further
    keyword arguments for that attack: steps, restarts, ...)."""

    surrogate: Any = None
    attack: str = "pgd"
    attack_kwargs: Optional[dict] = None


@ATTACKS.register("transfer", params=TransferParams)
class Transfer(Attack):
    """Black-box transfer from ``surrogate`` with the registered attack ``attack`` (fields:
    :class:`TransferParams`). Its recipe check is ``transfer`` (surrogates by variant name)."""

    name = "transfer"
    Params = TransferParams
    check = None
    ensemble = False

    def __init__(self, model: nn.Module, **params: Any) -> None:
        super().__init__(model, **params)
        if not isinstance(self.surrogate, nn.Module):
            raise ValueError("transfer needs a surrogate model (surrogate=<nn.Module>)")
        if self.attack == "transfer":
            raise ValueError("transfer cannot craft with itself; name a white-box attack such as 'pgd'")
        self.inner = ATTACKS.create(self.attack, self.surrogate, eps=self.eps, norm=self.norm,
                                    targeted=self.targeted, grad_mode=self.grad_mode, batch_size=self.batch_size,
                                    seed=self.seed, callback=self.callback, **dict(self.attack_kwargs or {}))

    def grad_context(self):
        # The inner attack switches the surrogate's estimators; the target is only evaluated.

        return contextlib.nullcontext()

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        dev = x.device
        return self.inner(x, y, target).to(dev)
