"""The architecture description stored in checkpoints and exports, and the model it rebuilds.

An ``arch`` is plain data: the model spec (:mod:`sturdynet.models.spec`: a registered name
and its parameters, ``torchvision.<name>``, ``timm.<name>`` or a factory, with its
``input_normalization``; never a class name), the data facts
(channels, classes, input size, normalization) and the compression steps; rebuilding
runs each step's structure-only transform, so the state_dict then loads into it.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from torch import nn

from ..core.method import run_steps
from ..core.params import Component, component
from ..core.registry import METHODS
from .spec import build_from_spec, parse_model_spec


def arch_of(model_spec: Any, data: Any, steps: Sequence[Component] = (),
            data_spec: Optional[Component] = None) -> Dict[str, Any]:
    """The architecture description stored in checkpoints and exports.

    ``data_spec`` (the recipe's data component) lets ``sturdynet evaluate`` reload the
    data set a checkpoint was trained on.
    """
    return {"model": model_spec.to_dict(), "data_spec": data_spec.to_dict() if data_spec else None, "data": {
        "in_channels": data.in_channels, "num_classes": data.num_classes, "input_size": list(data.input_size),
        "mean": list(data.mean), "std": list(data.std)},
        "steps": [s.to_dict("method") for s in steps]}


def build_from_arch(arch: Dict[str, Any], state_dict: Optional[Dict[str, Any]] = None,
                    trusted_factory: Optional[str] = "") -> nn.Module:
    """Rebuild the (untrained) model structure described by :func:`arch_of`; methods whose
    structure depends on the weights read it from ``state_dict`` (their shapes only: a
    packed export passes ``meta`` tensors).

    The stored spec may name any model (built-in, torchvision, timm, factory); a factory
    is imported only when it equals ``trusted_factory`` (a file never runs code the
    caller did not name).
    """
    spec = parse_model_spec(arch["model"], "arch.model")
    d = arch["data"]
    model = build_from_spec(spec, d["in_channels"], d["num_classes"], tuple(d["input_size"]),
                            d["mean"], d["std"], load=False, trusted_factory=trusted_factory)
    steps = [component(METHODS, s, f"steps[{i}]", key="method") for i, s in enumerate(arch.get("steps", []))]
    return run_steps(model, steps, None, structure_only=True, state_dict=state_dict)
