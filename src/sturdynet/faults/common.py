"""Shared pieces of the fault models and checks: seeded bit sampling and accuracy."""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import Tensor, nn

from ..data.base import Split
from ..core.stats import mean_std
from ..core.tensors import correct_mask


def sample_positions(total: int, k: int, generator: torch.Generator) -> Tensor:
    """``k`` distinct positions drawn uniformly from ``range(total)`` (sorted int64, CPU).

    Draws with replacement, drops duplicates and draws again for the missing ones; by
    exchangeability the result is a uniform ``k``-subset. Memory is O(k), so it works
    for the billions of bits of a float32 model.
    """
    if total < 0 or k < 0:
        raise ValueError(f"total and k must be >= 0, got {total} and {k}")
    if k > total:
        raise ValueError(f"cannot pick {k} distinct bits out of {total}")
    if k == 0:
        return torch.empty(0, dtype=torch.long)
    if 4 * k > total:
        return torch.sort(torch.randperm(total, generator=generator)[:k]).values
    picked = torch.unique(torch.randint(0, total, (k,), generator=generator))
    while picked.numel() < k:
        more = torch.randint(0, total, (k - picked.numel(),), generator=generator)
        picked = torch.unique(torch.cat([picked, more]))
    return picked


def binomial_count(n: int, p: float, generator: torch.Generator) -> int:
    """One draw of Binomial(n, p): how many of ``n`` independent bits flip at rate ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"bit error rate must be in [0, 1], got {p}")
    if n == 0 or p == 0.0:
        return 0
    if p == 1.0:
        return n
    k = torch.binomial(torch.tensor([float(n)], dtype=torch.float64), torch.tensor([p], dtype=torch.float64),
                       generator=generator)
    return int(k.item())


def trial_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from the run seed and integer keys (rate index, trial...)."""
    s = seed
    for k in keys:
        s = (s * 1_000_003 + int(k) + 1) % (2 ** 62)
    return torch.Generator().manual_seed(s)


def as_split(data: Any, what: str = "data") -> Split:
    """Labelled data as a split (:func:`sturdynet.data.adapt.as_split`: a Split, an ``(x, y)``
    pair, a DataLoader or a Dataset); ``what`` names the argument in errors.

    Raises:
        ValueError: images without labels, or anything else.
    """
    from ..data.adapt import as_split as adapt

    if isinstance(data, Tensor):
        raise ValueError(f"{what}: labels are needed; pass (x, y), a Split or a DataLoader of (x, y) batches")
    try:
        return adapt(data)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def as_images(data: Any, what: str = "x") -> Tensor:
    """Images only: a tensor, or the ``x`` of anything :func:`as_split` accepts."""
    return data if isinstance(data, Tensor) else as_split(data, what).x[:]


def accuracy(model: nn.Module, split: Any, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``split`` (anything :func:`as_split` takes)."""
    split = as_split(split)
    if len(split) == 0:
        raise ValueError("cannot measure accuracy on an empty split")
    return float(correct_mask(model, split.x, split.y, batch_size).float().mean())


def accuracies(model: nn.Module, split: Any, batch_size: int = 512) -> Dict[str, float]:
    """Top-1 accuracy and balanced accuracy (mean per-class recall over the classes present).

    A model that predicts one class everywhere has balanced accuracy exactly 1/classes on
    any split, while its plain accuracy is that class's share of the split.
    """
    split = as_split(split)
    if len(split) == 0:
        raise ValueError("cannot measure accuracy on an empty split")
    ok = correct_mask(model, split.x, split.y, batch_size).float()
    y = split.y.cpu()
    recalls = [float(ok[y == c].mean()) for c in torch.unique(y).tolist()]
    return {"accuracy": float(ok.mean()), "balanced_accuracy": sum(recalls) / len(recalls)}


def curve_point(key: str, x: float, accs: List[float], **extra: float) -> dict:
    """One point of an accuracy curve: ``{key: x, accuracy: mean, std: ..., trials: n, ...extra,
    trial_accuracy: [per-trial values]}`` (the per-trial values last, so ``key`` stays the x key)."""
    ms = mean_std(accs, ddof=0)
    return {key: x, "accuracy": ms["mean"], "std": ms["std"], "trials": len(accs), **extra,
            "trial_accuracy": [float(a) for a in accs]}
