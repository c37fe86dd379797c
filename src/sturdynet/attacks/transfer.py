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
from typing import Any, Optional

from torch import Tensor, nn

from ..core.registry import ATTACKS
from .base import Attack


@ATTACKS.register("transfer")
class Transfer(Attack):
    """Black-box transfer from ``surrogate`` with the registered attack ``attack``.

    Args:
        surrogate: the model the examples are crafted on.
        attack: name of the attack run on the surrogate (any registered attack except
            ``transfer``).
        attack_kwargs: further keyword arguments for that attack (steps, restarts, ...).
    """

    name = "transfer"

    def __init__(self, model: nn.Module, *, surrogate: Optional[nn.Module] = None, attack: str = "pgd",
                 eps: float = 8 / 255, attack_kwargs: Optional[dict] = None, **kw: Any) -> None:
        super().__init__(model, eps=eps, **kw)
        if not isinstance(surrogate, nn.Module):
            raise ValueError("transfer needs a surrogate model (surrogate=<nn.Module>)")
        if attack == "transfer":
            raise ValueError("transfer cannot craft with itself; name a white-box attack such as 'pgd'")
        from . import create_attack

        extra = dict(attack_kwargs or {})
        self.surrogate = surrogate
        self.inner = create_attack(attack, surrogate, eps=eps, norm=self.norm, targeted=self.targeted,
                                   grad_mode=self.grad_mode, batch_size=self.batch_size, seed=self.seed, **extra)

    def grad_context(self):
        # The inner attack switches the surrogate's estimators; the target is only evaluated.

        return contextlib.nullcontext()

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        dev = x.device
        return self.inner(x, y, target).to(dev)
