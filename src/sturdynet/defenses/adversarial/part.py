"""PART: pixel-reweighted adversarial training (Zhang et al., arXiv 2312.14235, ICML 2024).

A class activation map (Grad-CAM on the last convolution, for the true class) marks the
pixels that drive the prediction; adversarial examples keep the full budget ``eps`` on
those pixels and a lower budget ``eps_low`` elsewhere (the paper's CIFAR-10 setting is
eps 8/255 and eps_low 7/255), then the model is trained on them with PGD-AT's
cross-entropy. The first ``burn_in_epochs`` epochs use the uniform budget (standard
PGD-AT), as the paper does before the maps become informative.

Reconstructed where the summary of the method is not explicit: the map is scaled by its
per-image mean and a pixel counts as important when its scaled weight exceeds 1 (above
the image's average importance); the map is shared by all colour channels; crafting is
PGD with random start inside the per-pixel box |delta| <= eps_map and step
``alpha`` (default 2.5 * eps / steps).
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
from .cam import grad_cam


@dataclass(frozen=True)
class PARTParams(AdvParams):
    eps_low: Optional[float] = rng(0, 1, "[]", default=None)
    burn_in_epochs: int = rng(0, None, default=0)

    def __post_init__(self) -> None:
        if self.eps_low is not None and self.eps_low > self.eps:
            raise ValueError(f"eps_low ({self.eps_low}) must not exceed eps ({self.eps})")


def important_pixels(cam: Tensor) -> Tensor:
    """Boolean (N, 1, H, W): the pixels whose mean-scaled importance exceeds 1."""
    mean = cam.flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return cam / mean > 1.0


def pixel_budget(cam: Tensor, eps: float, eps_low: float) -> Tensor:
    """Per-pixel L-inf budget: ``eps`` on important pixels, ``eps_low`` elsewhere."""
    return torch.where(important_pixels(cam), torch.full_like(cam, eps), torch.full_like(cam, eps_low))


@ADVERSARIAL.register("part", params=PARTParams)
class PART(AdversarialCallback):
    """Pixel-reweighted PGD adversarial training."""

    def __init__(self, eps_low: Optional[float] = None, burn_in_epochs: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.eps_low = eps_low if eps_low is not None else self.eps * 7 / 8
        self.burn_in = burn_in_epochs
        self._budget: Tensor | float = self.eps

    def eps_map(self, state, x: Tensor) -> Tensor | float:
        return self._budget

    def craft(self, state, x: Tensor, y: Tensor) -> Tensor:
        model = state.model
        if state.epoch < self.burn_in:
            budget: Tensor | float = self.eps
        else:
            budget = pixel_budget(grad_cam(model, x, y), self.eps, self.eps_low).expand_as(x)
        self._budget = budget
        alpha = self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps
        lim = budget if isinstance(budget, Tensor) else torch.full_like(x, budget)
        delta = (torch.rand(x.shape, generator=state.generator).to(x.device) * 2 - 1) * lim
        x_adv = (x + delta).clamp(0, 1).detach()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(x_adv), y)
                grad, = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = (x + torch.maximum(torch.minimum(x_adv - x, lim), -lim)).clamp(0, 1).detach()
        return x_adv
