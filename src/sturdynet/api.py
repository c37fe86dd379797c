"""A short Python API for users without a recipe (torchattacks / torch.ao idiom)::

    from sturdynet import compress, check
    q = compress(model, "quant.uniform", bits=4, calibration=loader)
    report = check(q, loader, ["clean", {"check": "robust", "eps": 8/255}, {"check": "bfa"}])

``model`` is any ``nn.Module`` taking [0, 1] images (wrap a network that expects
normalized input with :class:`sturdynet.models.spec.InputNormalized`); data is a
DataLoader, a map-style Dataset, an ``(x, y)`` pair or a split. Results are plain dicts
with the keys of ``results.json`` (per check id: ``accuracy``, ``samples``,
``per_sample`` as a list of 0/1, and the check's own fields).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .core.method import MethodContext, run_steps
from .core.params import Component, to_dict
from .core.registry import CHECKS, METHODS
from .core.tensors import model_device

__all__ = ["compress", "check"]


def _device(device: Optional[Union[str, torch.device]], model: nn.Module) -> torch.device:
    if device is None:
        return model_device(model)
    from .run.runner import resolve_device

    return resolve_device(str(device))


def compress(model: nn.Module, method: str, calibration: Any = None, *, train: Any = None,
             train_config: Optional[Dict[str, Any]] = None, seed: int = 0,
             device: Optional[Union[str, torch.device]] = None, log: Optional[dict] = None,
             **params: Any) -> nn.Module:
    """Apply a registered compression method (``sturdynet list methods``) to ``model``.

    Args:
        model: any module; it is not changed (the method works on a copy).
        method: e.g. ``"quant.uniform"``, ``"prune.structured"``, ``"binarize"``.
        calibration: data for calibration / the input shape (structured pruning traces one
            example); defaults to ``train``.
        train: training data, required by methods that train (``METHODS.get(method).trains``:
            lottery tickets, sparse training, binarization, ...).
        train_config: training fields (epochs, lr, batch_size, ...) as in a recipe's ``train``.
        log: a dict that receives the method's report (e.g. structured pruning's MACs).
        **params: the method's parameters, validated as in a recipe.

    Raises:
        ConfigError: unknown method (with the nearest names) or bad parameters.
    """
    from .core.params import from_dict
    from .data.adapt import bundle_from
    from .train.config import TrainConfig
    from .train.context import training_context

    step = Component(method, METHODS.validate(method, params, method)) if method in METHODS else None
    if step is None:
        from .core.params import ConfigError

        raise ConfigError("method", METHODS.unknown(method))
    dev = _device(device, model)
    source = calibration if calibration is not None else train
    data = bundle_from(source, train=train if train is not None else source) if source is not None else None
    cfg = from_dict(TrainConfig, train_config or {}, "train_config")
    if METHODS.get(method).trains:
        if data is None:
            raise ValueError(f"{method} trains the network: pass train=<data> (and train_config)")
        ctx = training_context(data, cfg, seed=seed, device=dev)
    else:
        ctx = MethodContext(data=data, seed=seed, device=dev)
    out = run_steps(model, [step], ctx).to(dev).eval()
    if log is not None:
        log.update(to_dict(ctx.log))
    return out


def check(model: nn.Module, data: Any, checks: Sequence[Union[str, Dict[str, Any]]] = ("clean",), *,
          val: Any = None, seed: int = 0, device: Optional[Union[str, torch.device]] = None,
          models: Optional[Dict[str, nn.Module]] = None) -> Dict[str, Dict[str, Any]]:
    """Run checks (``sturdynet list checks``) on ``model``; returns ``{check id: metrics}``.

    Args:
        data: the samples to measure on.
        checks: names or mappings as in a recipe's ``evaluate`` (``{"check": "pgd", "eps": 0.03}``;
            ``id`` renames one).
        val: data the bit-flip attack may use to search (defaults to ``data``).
        models: other models by name for checks that compare (``dense`` for transfer
            attacks and the corruption baseline; defaults to ``model`` itself).
    """
    from .checks.base import CheckContext
    from .data.adapt import bundle_from
    from .run.recipe import parse_check

    dev = _device(device, model)
    model = model.to(dev).eval()
    bundle = bundle_from(data, val=val)
    specs = [parse_check(c, f"checks[{i}]") for i, c in enumerate(checks)]
    ctx = CheckContext(device=dev, seed=seed, models={"dense": model, **(models or {})})
    out: Dict[str, Dict[str, Any]] = {}
    for c in specs:
        m = CHECKS.create_from(c.check, model, bundle, ctx)
        if "per_sample" in m and isinstance(m["per_sample"], torch.Tensor):
            m["per_sample"] = [int(v) for v in m["per_sample"].tolist()]
        out[c.id] = to_dict(m)
        ctx.results[c.id] = out[c.id]
    return out


def checks_available() -> List[str]:
    """Names accepted by :func:`check`."""
    return CHECKS.names()
