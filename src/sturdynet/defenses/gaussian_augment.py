"""Gaussian data augmentation, the training method of randomized smoothing's base classifiers
(Cohen, Rosenfeld and Kolter, arXiv 1902.02918, section 5: "we trained the base classifier
with Gaussian data augmentation at the same noise level sigma used for certification").

:class:`GaussianAugment` (callback ``gaussian_augment``) replaces every training batch
``x`` by ``x + sigma * e``, ``e ~ N(0, I)``, before the forward pass. The noise is drawn
from the training loop's seeded generator (``state.generator``, on the CPU) and moved to
the batch's device, so training stays deterministic for a seed. As in the paper the noisy
batch is not clamped to [0, 1]. The batch is replaced, never modified in place (it may be
a view of the training set). Validation runs on clean images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.params import rng
from ..core.registry import CALLBACKS
from ..core.callbacks import Callback, TrainState


@dataclass(frozen=True)
class GaussianAugmentParams:
    sigma: float = rng(0, None, "()", default=0.25)


@CALLBACKS.register("gaussian_augment", params=GaussianAugmentParams)
class GaussianAugment(Callback):
    """Adds N(0, sigma^2) noise, in [0, 1] pixel units, to each training batch."""

    def __init__(self, sigma: float = 0.25) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"gaussian_augment: sigma must be a finite number > 0, got {sigma!r}")
        self.sigma = float(sigma)

    def on_batch_begin(self, state: TrainState) -> None:
        x = state.x
        if x is None:
            return
        noise = torch.randn(x.shape, generator=state.generator, dtype=x.dtype)
        state.x = x + self.sigma * noise.to(x.device)
