"""Build the :class:`~sturdynet.core.method.TrainingContext` that training methods require."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import torch

from ..core.callbacks import Callback
from ..core.method import TrainingContext
from ..data.base import DataBundle
from .config import TrainConfig, finetune_config
from .loop import fit


def training_context(data: DataBundle, train: TrainConfig, seed: int = 0, device: Optional[torch.device] = None,
                     init_state: Optional[dict] = None,
                     progress: Optional[Callable[[dict], None]] = None) -> TrainingContext:
    """A context whose ``fit`` is :func:`sturdynet.train.loop.fit` on ``data`` with ``seed``,
    ``device`` and ``progress`` (a call may pass other ``data`` or ``seed``; runs on other
    data report no progress)."""

    def run_fit(model: torch.nn.Module, cfg: TrainConfig, *, callbacks: Sequence[Callback] = (),
                data: Any = None, seed: Optional[int] = None) -> List[dict]:
        own = data is None
        return fit(model, data_ if own else data, cfg, seed=seed_ if seed is None else seed,
                   callbacks=list(callbacks), progress=progress if own else None, device=device)

    data_, seed_ = data, seed
    return TrainingContext(data=data, train=train, seed=seed, device=device, init_state=init_state,
                           fit=run_fit, finetune_config=finetune_config)
