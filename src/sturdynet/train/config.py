"""Training hyper-parameters (one dataclass shared by base training and fine-tuning)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Tuple

from ..core.params import Component, ConfigError, component, from_dict, rng, to_dict
from ..core.registry import ADVERSARIAL, CALLBACKS


def parse_adversarial(value: Any, path: str) -> Optional[Component]:
    """Validate ``{method: <adversarial method>, ...}`` (None passes through)."""
    if value is None:
        return None
    return component(ADVERSARIAL, value, path, key="method")


def _parse_callbacks(value: Any, path: str) -> Tuple[Component, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, f"must be a list of callbacks, got {value!r}")
    return tuple(component(CALLBACKS, v, f"{path}[{i}]") for i, v in enumerate(value))


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained.

    The learning rate follows a linear warm-up for ``warmup_epochs`` and then a cosine
    decay to zero (``schedule: cosine``) or stays constant. ``adversarial`` selects an
    adversarial-training method and ``callbacks`` adds training callbacks (sparse
    training, binary-network hooks, ...), both by registered name.
    """

    epochs: int = rng(0, None, default=10)
    batch_size: int = rng(1, None, default=64)
    lr: float = rng(0, None, "(]", default=0.05)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = rng(0, 1, "[)", default=0.9)
    nesterov: bool = False
    weight_decay: float = rng(0, None, default=5e-4)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = rng(0, None, default=0.0)
    label_smoothing: float = rng(0, 1, "[)", default=0.0)
    grad_clip: Optional[float] = rng(0, None, "(]", default=None)
    adversarial: Optional[Component] = field(default=None, metadata={"parse": parse_adversarial})
    callbacks: Tuple[Component, ...] = field(default=(), metadata={"parse": _parse_callbacks})
    eval_every: int = rng(0, None, default=1)
    amp: bool = False  # float16 autocast + gradient scaling on CUDA (ignored on the CPU)

    def __post_init__(self) -> None:
        if self.warmup_epochs > self.epochs and self.epochs > 0:
            raise ConfigError("warmup_epochs", f"must be <= epochs ({self.epochs}), got {self.warmup_epochs}")


def finetune_config(base: TrainConfig, epochs: int, overrides: Optional[Mapping[str, Any]], path: str) -> TrainConfig:
    """The fine-tuning schedule: the base config at lr/10, no warm-up, then ``overrides``."""
    d = to_dict(base)
    d.update(epochs=epochs, lr=base.lr * 0.1, warmup_epochs=0.0)
    d["adversarial"] = base.adversarial.to_dict("method") if base.adversarial else None
    d["callbacks"] = []
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ConfigError(path, f"must be a mapping of training fields, got {overrides!r}")
        d.update(overrides)
    return from_dict(TrainConfig, d, path)
