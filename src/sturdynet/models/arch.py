"""The architecture description stored in checkpoints and exports, and the model it rebuilds.

An ``arch`` is plain data: the registered model name and its parameters, the data facts
(channels, classes, input size, normalization) and the compression steps; rebuilding
runs each step's structure-only transform, so the state_dict then loads into it.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from torch import nn

from ..core.method import run_steps
from ..core.params import Component, component
from ..core.registry import METHODS, MODELS
from .common import build_model


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
    spec = component(MODELS, arch["model"], "model")
    d = arch["data"]
    model = build_model(spec.name, d["in_channels"], d["num_classes"], tuple(d["input_size"]),
                        d["mean"], d["std"], **spec.kwargs())
    steps = [component(METHODS, s, f"steps[{i}]", key="method") for i, s in enumerate(arch.get("steps", []))]
    return run_steps(model, steps, None, structure_only=True, state_dict=state_dict)
