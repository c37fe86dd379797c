"""Training callbacks: the only way to add behaviour to the training loop.

The loop (``sturdynet.train.loop.fit``) calls, in order, for each batch:
``on_batch_begin`` (may replace ``state.x`` / ``state.y``, e.g. with adversarial
examples), ``compute_loss`` (the first callback that returns a tensor supplies the
loss; otherwise cross-entropy), ``on_after_backward`` (gradients are final: clipped,
not yet applied), then the optimizer step, the masks, and ``on_step_end``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn


@dataclass
class TrainState:
    """What callbacks see. ``x``/``y`` hold the current batch; ``log`` collects per-epoch numbers."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: Any
    data: Any
    device: torch.device
    generator: torch.Generator
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    x: Optional[Tensor] = None
    y: Optional[Tensor] = None
    logits: Optional[Tensor] = None
    loss: Optional[Tensor] = None
    log: Dict[str, float] = field(default_factory=dict)
    history: List[Dict[str, float]] = field(default_factory=list)
    stop: bool = False

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return self.step / max(1, self.total_steps)


class Callback:
    """Base class; override the hooks you need."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_batch_begin(self, state: TrainState) -> None: ...

    def compute_loss(self, state: TrainState) -> Optional[Tensor]:
        return None

    def on_after_backward(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...
