"""Checkpoints: weights plus everything needed to rebuild the model, loaded as data only.

A checkpoint is a plain dict of strings, numbers, lists and tensors, so
``torch.load(path, weights_only=True)`` reads it without running any code. The model
is rebuilt from the registered model name and its parameters, the data facts
(channels, classes, input size, normalization) and the compression steps (their
``prepare`` builds the structure: quantizers, masks), then the state_dict is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..atomic import torch_save_atomic
from ..config import Component, ConfigError, component
from ..registry import METHODS, MODELS

FORMAT = "sturdynet-checkpoint"


def arch_of(model_spec: Component, data: Any, steps: Sequence[Component] = (),
            data_spec: Optional[Component] = None) -> Dict[str, Any]:
    """The architecture description stored in checkpoints and exports.

    ``data_spec`` (the recipe's data component) lets ``sturdynet evaluate`` reload the
    data set a checkpoint was trained on.
    """
    return {"model": model_spec.to_dict(), "data_spec": data_spec.to_dict() if data_spec else None, "data": {
        "in_channels": data.in_channels, "num_classes": data.num_classes, "input_size": list(data.input_size),
        "mean": list(data.mean), "std": list(data.std)},
        "steps": [s.to_dict("method") for s in steps]}


def build_from_arch(arch: Dict[str, Any], state_dict: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Rebuild the (untrained) model structure described by :func:`arch_of`; methods whose
    structure depends on the weights read it from ``state_dict`` (their shapes only: a
    packed export passes ``meta`` tensors)."""
    from .. import plugins  # noqa: F401
    from ..compress import run_steps
    from ..models.common import build_model

    spec = component(MODELS, arch["model"], "model")
    d = arch["data"]
    model = build_model(spec.name, d["in_channels"], d["num_classes"], tuple(d["input_size"]),
                        d["mean"], d["std"], **spec.kwargs())
    steps = [component(METHODS, s, f"steps[{i}]", key="method") for i, s in enumerate(arch.get("steps", []))]
    return run_steps(model, steps, None, structure_only=True, state_dict=state_dict)


def save_checkpoint(path: Union[str, Path], model: nn.Module, arch: Dict[str, Any],
                    extra: Optional[Dict[str, Any]] = None) -> None:
    """Write atomically: a half-written checkpoint never replaces a good one."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "version": 1, "arch": arch, "state_dict": state, "extra": dict(extra or {})}
    torch_save_atomic(path, blob)


def load_checkpoint(path: Union[str, Path], map_location: str = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns (model in eval mode, blob).

    Raises:
        ValueError: one line naming the file when it is missing, not a sturdynet
            checkpoint, or does not match its architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sturdynet checkpoint")
    try:
        model = build_from_arch(blob["arch"], blob["state_dict"])
        model.load_state_dict(blob["state_dict"], strict=True)
    except (ConfigError, KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: does not match its architecture ({str(e).splitlines()[0][:300]})") from None
    model.eval()
    return model, blob
