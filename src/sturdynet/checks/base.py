"""Checks: functions that measure one property of a model on the test split.

A check is registered in ``sturdynet.core.registry.CHECKS`` with a parameter dataclass and
called as ``check(model, data, params, ctx) -> metrics``. ``metrics`` is a JSON-able
dict that holds at least ``accuracy``; checks that classify samples also return
``per_sample`` (a list of 0/1, 1 = still correct) so that checks can be combined by
per-sample worst case.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.params import rng
from ..data.base import DataBundle, Split


@dataclass
class CheckContext:
    """Run-level facts a check may use.

    Attributes:
        device: where to compute.
        seed: the run seed (checks seed their own generators from it).
        models: other variants' models by name (``"dense"`` is the base model), for
            checks such as transfer attacks.
        results: metrics already computed for this variant, by check id.
        progress: optional callable receiving progress events.
    """

    device: torch.device = torch.device("cpu")
    seed: int = 0
    models: Dict[str, nn.Module] = field(default_factory=dict)
    results: Dict[str, dict] = field(default_factory=dict)
    variant: str = ""
    progress: Optional[Callable[[dict], None]] = None


@dataclass(frozen=True)
class SampleParams:
    """Fields shared by checks: how many test samples and the batch size."""

    samples: Optional[int] = rng(1, None, default=None)
    batch_size: int = rng(1, None, default=256)


def value_list(value, name: str) -> Tuple[float, ...]:
    """A check field that takes one number or a list (``eps``, ``sigma``) as a non-empty
    tuple of floats."""
    out = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)
    if not out:
        raise ValueError(f"{name} must name at least one value")
    return out


def eval_split(data: DataBundle, samples: Optional[int]) -> Split:
    """The first ``samples`` test samples (the test split is already shuffled, seeded)."""
    return data.test.take(samples)


def summarize(correct: Tensor, **extra: Any) -> Dict[str, Any]:
    """The standard metrics block: accuracy plus per-sample outcomes."""
    c = correct.to(torch.bool).cpu()
    return {"accuracy": float(c.float().mean()) if c.numel() else 0.0, "samples": int(c.numel()),
            "per_sample": [int(v) for v in c.tolist()], **extra}


def worst_case(per_sample: List[List[int]]) -> List[int]:
    """A sample counts as robust only if every listed outcome kept it correct."""
    if not per_sample:
        return []
    n = len(per_sample[0])
    if any(len(p) != n for p in per_sample):
        raise ValueError("per-sample outcomes cover different numbers of samples")
    return [int(all(p[i] for p in per_sample)) for i in range(n)]
