"""Compression methods as transforms: ``apply(model, params, ctx) -> new model``.

A method never changes the model it is given (it works on a deep copy). What it
reached (sparsity, bit widths, bytes when packed) is measured afterwards from the
model itself by :func:`sturdynet.core.storage.compression_facts`, so every method is
measured the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn


@dataclass
class CompressContext:
    """What a method may need beyond the model: data, training settings, a trainer.

    ``fit(model, cfg)`` trains a model with the run's seed, device and progress display.
    ``init_state`` is the base model's state_dict before training (lottery tickets
    rewind to it).
    """

    data: Any = None
    train: Any = None
    seed: int = 0
    device: Optional[torch.device] = None
    fit: Optional[Callable[..., list]] = None
    init_state: Optional[dict] = None
    log: dict = field(default_factory=dict)


class CompressionMethod:
    """Base class. ``apply`` builds the compressed model; ``prepare`` builds only its
    structure (layers, masks, quantizers) so that a checkpoint's state_dict can be
    loaded into it."""

    def apply(self, model: nn.Module, params: Any, ctx: Optional[CompressContext] = None) -> nn.Module:
        raise NotImplementedError

    def prepare(self, model: nn.Module, params: Any) -> nn.Module:
        return self.apply(model, params, None)

    def prepare_for_state(self, model: nn.Module, params: Any, state_dict: Mapping[str, Any]) -> nn.Module:
        """Like :meth:`prepare`, for methods whose structure only the checkpoint tells
        (e.g. channel counts chosen by a global threshold)."""
        return self.prepare(model, params)


def run_steps(model: nn.Module, steps: Sequence[Any], ctx: Optional[CompressContext] = None,
              structure_only: bool = False, state_dict: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Apply the variant's methods (registered components) in order.

    With ``structure_only`` only the structure is built (``prepare``, or
    ``prepare_for_state`` when the checkpoint's ``state_dict`` is given).
    """
    from .registry import METHODS

    for step in steps:
        method = METHODS.get(step.name)()
        if not structure_only:
            model = method.apply(model, step.params, ctx)
        elif state_dict is not None:
            model = method.prepare_for_state(model, step.params, state_dict)
        else:
            model = method.prepare(model, step.params)
    return model
