"""Common corruptions: the registry entry type, input checks and the size adaptation.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", arXiv 1903.12261. The per-severity constants are those of the
authors' CIFAR-10-C generator (``ImageNet-C/create_c/make_cifar_c.py`` in
hendrycks/robustness), written for 32x32 images. Spatial constants (blur radii and
sigmas, displacements) are multiplied by ``scale = min(H, W) / 32`` so that a corruption
covers the same fraction of the image at any size; per-pixel constants (noise levels,
intensities, zoom factors, JPEG quality) are used as they are. Each corruption's
docstring says which of its constants scale.

A corruption maps float images (N, C, H, W) in [0, 1] with C = 1 or 3 to images of the
same shape and dtype in [0, 1]; randomness comes only from the ``torch.Generator`` passed
in (drawn on the CPU, so the result does not depend on the device). Deviation common to
all: the originals round to 8-bit images between steps; these stay in floating point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core.registry import CORRUPTIONS

#: severities of the benchmark
SEVERITIES: Tuple[int, ...] = (1, 2, 3, 4, 5)
#: size the CIFAR-10-C constants were written for
REFERENCE_SIZE = 32

#: the function behind a corruption: (images, this severity's constant, scale, generator) -> images
CorruptionFn = Callable[[Tensor, Any, float, torch.Generator], Tensor]


def check_images(x: Any, what: str = "corruption") -> None:
    """Raise a one-line ValueError unless ``x`` is a float (N, C, H, W) tensor, C in {1, 3}, in [0, 1]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{what}: images must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what}: images must have shape (N, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: images must be a floating-point tensor, got {x.dtype}")
    if min(x.shape[2], x.shape[3]) < 2:
        raise ValueError(f"{what}: images must be at least 2x2 pixels, got {x.shape[2]}x{x.shape[3]}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"{what}: image values must lie in [0, 1], got [{float(x.min()):.4g}, {float(x.max()):.4g}]")


def check_severity(severity: Any, what: str = "corruption") -> int:
    """Return ``severity`` if it is an integer in 1..5, else raise a one-line ValueError."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"{what}: severity must be an integer in 1..5, got {severity!r}")
    return severity


def size_scale(x: Tensor) -> float:
    """``min(H, W) / 32``: the factor applied to the spatial constants."""
    return min(int(x.shape[2]), int(x.shape[3])) / REFERENCE_SIZE


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: ``corruption(x, severity, generator) -> corrupted copy``.

    Attributes:
        name: registry name.
        family: noise, blur, weather or digital (the paper's grouping).
        table: the five per-severity constants (CIFAR-10-C values).
        fn: the implementation, called with this severity's constant and the size scale.
        substitute: True where the original needs assets we do not ship and a
            procedural stand-in is used instead (named ``*_procedural``).
    """

    name: str
    family: str
    table: Tuple[Any, ...]
    fn: CorruptionFn
    substitute: bool = False

    def __call__(self, x: Tensor, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
        check_images(x, self.name)
        check_severity(severity, self.name)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.no_grad():
            out = self.fn(x, self.table[severity - 1], size_scale(x), gen)
        return out.to(x.dtype).clamp(0.0, 1.0)


def register_corruption(name: str, family: str, table: Sequence[Any],
                        substitute: bool = False) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator: register ``fn`` in ``CORRUPTIONS`` under ``name`` with its severity table."""
    if len(table) != len(SEVERITIES):
        raise ValueError(f"corruption {name}: needs one constant per severity (5), got {len(table)}")

    def deco(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS.register(name)(Corruption(name, family, tuple(table), fn, substitute))
        return fn

    return deco


def corrupt(x: Tensor, name: str, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Apply the registered corruption ``name`` at ``severity`` (1..5) to images ``x``.

    Raises:
        ValueError: unknown name, severity outside 1..5, or images of the wrong shape or range.
    """
    return CORRUPTIONS.create(name, x, severity, generator)


# ---- random numbers: drawn on the CPU generator, moved to the images' device --------------
def uniform(gen: torch.Generator, shape: Sequence[int], like: Tensor, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """Uniform samples in [lo, hi) of ``shape`` on ``like``'s device and dtype."""
    return (lo + (hi - lo) * torch.rand(tuple(shape), generator=gen, dtype=torch.float64)).to(like.device, like.dtype)


def normal(gen: torch.Generator, shape: Sequence[int], like: Tensor) -> Tensor:
    """Standard normal samples of ``shape`` on ``like``'s device and dtype."""
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(like.device, like.dtype)


def luminance(x: Tensor) -> Tensor:
    """(N, 1, H, W) grey level: ITU-R 601 weights for RGB (as OpenCV's RGB2GRAY), the image itself for C = 1."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


#: the 15 benchmark corruptions of the paper, in its order (frost: a procedural stand-in)
BENCHMARK: Tuple[str, ...] = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                              "motion_blur", "zoom_blur", "snow", "frost_procedural", "fog", "brightness",
                              "contrast", "elastic_transform", "pixelate", "jpeg_compression")
#: the paper's four held-out extra corruptions
EXTRAS: Tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
