"""The ``certify`` check: certified L2 accuracy of the randomized-smoothing classifier.

Runs CERTIFY (Cohen, Rosenfeld and Kolter, arXiv 1902.02918; see :mod:`.smoothing`) on
the first ``samples`` test images for every ``sigma`` listed. The certified accuracy at
radius ``r`` is the fraction of those images that CERTIFY classifies correctly, without
abstaining, with a certified radius of at least ``r``. Metrics:

- ``kind: "certified"``: a certificate, not an attack, so the report keeps it out of the
  adversarial robust-accuracy minimum;
- ``accuracy`` and ``per_sample``: certified at radius 0 (correct and not abstained) for
  the first sigma; ``sigma``: that sigma;
- ``curve``: ``[{"radius": r, "accuracy": a}, ...]`` for the first sigma, radius 0 first;
- ``abstain_rate``, ``mean_radius`` (mean certified radius of the correctly certified
  images, 0 when there are none), ``noisy_accuracy`` (the base model's accuracy on the
  noisy samples) for the first sigma; ``per_sigma``: these and the curve for each sigma;
- ``clean_accuracy``: the base model's accuracy on the unperturbed images;
- ``n0``, ``n``, ``alpha``.

Every sigma uses a generator seeded with the run seed, so the sigmas see the same
standard-normal draws scaled differently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..core import progress
from ..core.params import rng
from .base import CheckContext, SampleParams, eval_split, summarize, value_list
from ..core.tensors import correct_mask
from ..core.registry import CHECKS
from ..certify.smoothing import Certificate, SmoothedClassifier


@dataclass(frozen=True)
class CertifyParams(SampleParams):
    """Fields of the ``certify`` check.

    ``n`` defaults to 1,000 estimation samples (the paper uses 100,000; 1,000 keeps a
    digits run to seconds); the largest radius ``n`` samples can certify is
    ``sigma * Phi^{-1}(alpha ** (1 / n))`` (0.62 for sigma 0.25, n 1,000, alpha 0.001).
    ``samples`` defaults to 500 test images, as many as the paper certifies.
    ``batch_size`` counts noisy images per forward pass.
    """

    sigma: Union[float, Tuple[float, ...]] = rng(0, None, "()", default=0.25)
    n0: int = rng(1, None, default=100)
    n: int = rng(1, None, default=1000)
    alpha: float = rng(0, 1, "()", default=0.001)
    radii: Tuple[float, ...] = rng(0, None, default=(0.0, 0.25, 0.5, 0.75, 1.0))
    samples: Optional[int] = rng(1, None, default=500)
    batch_size: int = rng(1, None, default=1000)

    def __post_init__(self) -> None:
        if isinstance(self.sigma, tuple) and not self.sigma:
            raise ValueError("sigma: must name at least one value")


def radius_grid(radii: Tuple[float, ...]) -> List[float]:
    """The curve's radii: 0 first, then the others ascending, without repeats."""
    return sorted({0.0, *(float(r) for r in radii)})


def certified_curve(cert: Certificate, y: Tensor, radii: List[float]) -> List[dict]:
    """Certified accuracy at each radius (correct, not abstained, radius >= r)."""
    correct = cert.prediction == y.cpu()
    total = max(1, int(y.numel()))
    return [{"radius": r, "accuracy": int((correct & (cert.radius >= r)).sum()) / total} for r in radii]


def summarize_sigma(sigma: float, cert: Certificate, y: Tensor, radii: List[float]) -> dict:
    """One sigma's block: curve, abstain rate, mean radius of correct certificates, noisy accuracy."""
    y = y.cpu()
    correct = cert.prediction == y
    total = max(1, int(y.numel()))
    n = int(cert.counts[0].sum()) if cert.counts.numel() else 1
    noisy = cert.counts.gather(1, y[:, None]).sum() / (n * total) if cert.counts.numel() else torch.tensor(0.0)
    return {"sigma": sigma, "accuracy": int(correct.sum()) / total,
            "abstain_rate": int((cert.prediction < 0).sum()) / total,
            "mean_radius": float(cert.radius[correct].mean()) if bool(correct.any()) else 0.0,
            "noisy_accuracy": float(noisy), "curve": certified_curve(cert, y, radii)}


@CHECKS.register("certify", params=CertifyParams)
def certify_check(model, data, params: CertifyParams, ctx: CheckContext) -> dict:
    """Certified L2 accuracy of the smoothed ``model`` at every sigma (arXiv 1902.02918)."""
    split = eval_split(data, params.samples)
    radii = radius_grid(params.radii)
    blocks, first = [], None
    sigmas = value_list(params.sigma, "sigma")
    for i, sigma in enumerate(sigmas):
        smoothed = SmoothedClassifier(model, sigma, batch_size=params.batch_size, seed=ctx.seed)
        with progress.part(i, len(sigmas)):
            cert = smoothed.certify(split.x, params.n0, params.n, params.alpha)
        blocks.append(summarize_sigma(sigma, cert, split.y, radii))
        if first is None:
            first = cert.prediction == split.y.cpu()
        if ctx.progress is not None:
            ctx.progress({"event": "certify_sigma", "sigma": sigma, "samples": len(split), "variant": ctx.variant})
    assert first is not None
    clean = correct_mask(model, split.x, split.y, params.batch_size)
    head = blocks[0]
    return summarize(first, kind="certified", sigma=head["sigma"], n0=params.n0, n=params.n, alpha=params.alpha,
                     clean_accuracy=float(clean.float().mean()) if clean.numel() else 0.0,
                     abstain_rate=head["abstain_rate"], mean_radius=head["mean_radius"],
                     noisy_accuracy=head["noisy_accuracy"], curve=head["curve"], per_sigma=blocks)
