"""TRADES (Zhang et al., arXiv 1901.08573).

Loss = CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x')), averaged over the batch,
where x' maximises the same KL term inside the L-inf eps-ball: start at
x + 0.001 * N(0, I), then ``steps`` signed-gradient steps of size ``alpha`` (the
paper's CIFAR-10 setting: eps 0.031, alpha 0.007, 10 steps, beta 6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.params import rng
from ...core.registry import ADVERSARIAL
from .base import AdvParams, AdversarialCallback


@dataclass(frozen=True)
class TRADESParams(AdvParams):
    beta: float = rng(0, None, default=6.0)


def trades_kl(logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
    """Per-sample KL(softmax(clean) || softmax(adv))."""
    p = F.log_softmax(logits_clean, dim=1)
    q = F.log_softmax(logits_adv, dim=1)
    return (p.exp() * (p - q)).sum(1)


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """CE on clean logits plus beta times the mean KL between clean and adversarial."""
    return F.cross_entropy(logits_clean, y) + beta * trades_kl(logits_clean, logits_adv).mean()


@ADVERSARIAL.register("trades", params=TRADESParams)
class TRADES(AdversarialCallback):
    """The TRADES objective; crafting maximises the KL to the clean prediction."""

    def __init__(self, beta: float = 6.0, **kw) -> None:
        super().__init__(**kw)
        self.beta = beta

    def craft(self, state, x: Tensor, y: Tensor) -> Tensor:
        alpha = self.alpha if self.alpha is not None else self.eps / 4.4  # 0.007 at eps 0.031
        model = state.model
        with torch.no_grad():
            clean = model(x)
        noise = torch.randn(x.shape, generator=state.generator).to(x.device)
        x_adv = (x + 0.001 * noise).clamp(0, 1)
        x_adv = (x + (x_adv - x).clamp(-self.eps, self.eps)).detach()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                kl = trades_kl(clean, model(x_adv)).sum()
                grad, = torch.autograd.grad(kl, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = (x + (x_adv - x).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return x_adv

    def compute_loss(self, state) -> Optional[Tensor]:
        logits_clean = state.model(self.clean_x)
        logits_adv = state.model(state.x)
        state.logits = logits_clean
        return trades_loss(logits_clean, logits_adv, state.y, self.beta)
