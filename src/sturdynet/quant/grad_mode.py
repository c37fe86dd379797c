"""Switch the gradient estimator of every quantizer in a model, forward unchanged."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


def has_estimators(model: nn.Module) -> bool:
    """True when the model holds at least one module with a switchable ``grad_mode``."""
    return any(hasattr(m, "grad_mode") for m in model.modules())


@contextlib.contextmanager
def gradient_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Within the block, every quantizer uses ``mode`` ("ste" or "true") for backward."""
    from .base import GRAD_MODES  # here, not at import: quant imports nn

    if mode not in GRAD_MODES:
        raise ValueError(f"unknown gradient mode {mode!r}; use one of {', '.join(GRAD_MODES)}")
    mods = [m for m in model.modules() if hasattr(m, "grad_mode")]
    saved = [m.grad_mode for m in mods]
    try:
        for m in mods:
            m.grad_mode = mode
        yield model
    finally:
        for m, s in zip(mods, saved):
            m.grad_mode = s
