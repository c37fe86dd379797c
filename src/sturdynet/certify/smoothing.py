"""The smoothed classifier of randomized smoothing (Cohen, Rosenfeld and Kolter, arXiv 1902.02918).

For a base classifier ``f`` and noise level ``sigma`` the smoothed classifier is

    g(x) = argmax_c P(f(x + e) = c),   e ~ N(0, sigma^2 I).

If the top class has probability ``pA >= pA_lower > 1/2``, ``g`` is constant on the L2
ball of radius ``sigma * Phi^{-1}(pA_lower)`` around ``x`` (the paper's Theorem 1 with
``pB_upper = 1 - pA_lower``). :class:`SmoothedClassifier` implements the paper's two
Monte Carlo algorithms:

- PREDICT (``predict``): ``n`` noisy samples; return the top class when the two-sided
  binomial test of its count against the runner-up's rejects ``p = 1/2`` at level
  ``alpha``, else abstain. Wrong with probability at most ``alpha`` (Theorem 2).
- CERTIFY (``certify``): ``n0`` samples choose the class, ``n`` fresh samples give the
  one-sided Clopper-Pearson lower bound ``pA_lower`` at level ``1 - alpha``; return the
  class and radius ``sigma * Phi^{-1}(pA_lower)`` when ``pA_lower > 1/2``, else abstain.
  A returned radius is wrong with probability at most ``alpha``.

Inputs are [0, 1] images; the model normalizes them itself, so the noise is added in
[0, 1] pixel space, as in the paper. The noisy input is NOT clamped to [0, 1]: clamping
would change the noise distribution and void the certificate. Noise is drawn in batches
of ``batch_size`` noisy images (several inputs share a batch) on the model's device
from a seeded ``torch.Generator``; results depend on the seed, the batch size and the
device. The model's train/eval mode, its weights and the caller's tensors are unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from ..core import progress
from ..core.tensors import eval_mode, model_device
from .stats import binomial_pvalue, check_alpha, clopper_pearson_lower

#: the label returned when the smoothed classifier abstains
ABSTAIN = -1


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for a batch of inputs (all tensors on the CPU).

    Attributes:
        prediction: (M,) int64 class, :data:`ABSTAIN` where it abstains.
        radius: (M,) float64 certified L2 radius, 0 where it abstains.
        pa_lower: (M,) float64 lower confidence bound on the top class's probability.
        counts: (M, K) int64 class counts of the ``n`` estimation samples.
    """

    prediction: Tensor
    radius: Tensor
    pa_lower: Tensor
    counts: Tensor


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class SmoothedClassifier:
    """The smoothed classifier ``g`` of a base classifier under N(0, sigma^2) noise.

    Args:
        model: base classifier taking [0, 1] images (N, C, H, W) and returning logits (N, K).
        sigma: noise standard deviation in [0, 1] pixel units (> 0).
        batch_size: noisy images per forward pass.
        seed: seeds the noise generator (ignored when ``generator`` is given).
        generator: a ``torch.Generator`` on the model's device; advanced by every call.
    """

    def __init__(self, model: nn.Module, sigma: float, batch_size: int = 512, seed: int = 0,
                 generator: Optional[torch.Generator] = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        _check_count("batch_size", batch_size)
        self.model = model
        self.sigma = float(sigma)
        self.batch_size = batch_size
        self.device = model_device(model)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        elif generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device}, the model on {self.device}")
        self.generator = generator

    # ---- sampling -----------------------------------------------------------------
    def _inputs(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"x must be a float tensor of shape (N, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise ValueError("x must hold images in [0, 1] (normalization lives inside the model)")
        return x.detach().to(self.device)

    @torch.no_grad()
    def sample_counts(self, x: Tensor, num: int) -> Tensor:
        """Class counts of the base classifier on ``num`` noisy copies of each input.

        Args:
            x: (M, C, H, W) images in [0, 1].
            num: noisy samples per input.

        Returns:
            (M, K) int64 counts on the CPU (each row sums to ``num``).
        """
        _check_count("num", num)
        xs = self._inputs(x)
        m = xs.shape[0]
        counts: Optional[Tensor] = None
        with eval_mode(self.model):  # every submodule's own train/eval flag comes back
            total = m * num
            for start in range(0, total, self.batch_size):
                owner = torch.arange(start, min(total, start + self.batch_size), device=self.device) // num
                clean = xs[owner]
                noise = torch.randn(clean.shape, generator=self.generator, device=self.device, dtype=clean.dtype)
                logits = self.model(clean + self.sigma * noise)  # deliberately not clamped: see module doc
                if counts is None:
                    counts = torch.zeros(m, logits.shape[1], dtype=torch.long, device=self.device)
                counts.index_put_((owner, logits.argmax(1)), torch.ones_like(owner), accumulate=True)
                progress.tick(min(total, start + self.batch_size), total)
        return counts.cpu() if counts is not None else torch.zeros(0, 0, dtype=torch.long)

    # ---- the two algorithms ---------------------------------------------------------
    def predict(self, x: Tensor, n: int, alpha: float) -> Tensor:
        """PREDICT: the smoothed class of each input, or :data:`ABSTAIN`.

        Returns the top class of ``n`` noisy samples when the two-sided binomial test of
        its count ``nA`` against the runner-up's ``nB`` gives a p-value <= ``alpha``.

        Returns:
            (M,) int64 on the CPU.
        """
        check_alpha(alpha)
        counts = self.sample_counts(x, n)
        if counts.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        if counts.shape[1] < 2:
            raise ValueError("the base classifier must output at least two classes")
        top2 = counts.sort(dim=1, descending=True).values[:, :2].numpy()
        pvalue = binomial_pvalue(top2[:, 0], top2[:, 0] + top2[:, 1])
        label = counts.argmax(1)
        return torch.where(torch.from_numpy(pvalue <= alpha), label, torch.full_like(label, ABSTAIN))

    def certify(self, x: Tensor, n0: int, n: int, alpha: float) -> Certificate:
        """CERTIFY: class and certified L2 radius of each input, or abstain.

        ``n0`` samples select the class ``cA`` (the most frequent; ties go to the lower
        index); ``n`` independent samples give ``pA_lower``, the one-sided Clopper-Pearson
        lower bound at level ``1 - alpha`` on P(f(x + e) = cA). The radius is
        ``sigma * Phi^{-1}(pA_lower)`` when ``pA_lower > 1/2``; otherwise abstain.
        """
        check_alpha(alpha)
        _check_count("n0", n0)
        _check_count("n", n)
        with progress.span(0, n0 / (n0 + n)):
            select = self.sample_counts(x, n0)
        with progress.span(n0 / (n0 + n), 1):
            counts = self.sample_counts(x, n)
        if select.numel() == 0:
            empty = torch.zeros(0, dtype=torch.float64)
            return Certificate(torch.zeros(0, dtype=torch.long), empty, empty, counts)
        top = select.argmax(1)
        n_a = counts.gather(1, top[:, None]).squeeze(1).numpy()
        pa = clopper_pearson_lower(n_a, n, alpha)
        certified = pa > 0.5
        radius = np.where(certified, self.sigma * stats.norm.ppf(np.where(certified, pa, 0.75)), 0.0)
        prediction = torch.where(torch.from_numpy(certified), top, torch.full_like(top, ABSTAIN))
        return Certificate(prediction, torch.from_numpy(radius).double(), torch.from_numpy(pa).double(), counts)
