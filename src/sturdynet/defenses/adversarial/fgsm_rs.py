"""Fast adversarial training: FGSM with a random start (Wong et al., arXiv 2001.03994).

delta ~ U(-eps, eps); delta <- clip_eps(delta + alpha * sign(grad_x CE(x + delta, y)));
train on clip_[0,1](x + delta). The paper's step is alpha = 1.25 * eps (the default here).
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
class FGSMRSParams(AdvParams):
    steps: int = rng(1, 1, default=1)
    alpha: Optional[float] = rng(0, None, "(]", default=None)


@ADVERSARIAL.register("fgsm_rs", params=FGSMRSParams)
class FGSMRS(AdversarialCallback):
    """One FGSM step from a uniformly random point of the eps-ball."""

    def craft(self, state, x: Tensor, y: Tensor) -> Tensor:
        alpha = self.alpha if self.alpha is not None else 1.25 * self.eps
        delta = (torch.rand(x.shape, generator=state.generator).to(x.device) * 2 - 1) * self.eps
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(state.model(x + delta), y)
            grad, = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-self.eps, self.eps)
        return (x + delta).clamp(0, 1)
