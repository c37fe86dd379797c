"""What the input-attack checks share: parameters, the eps curve, the masking flags.

Every attack check evaluates the first ``samples`` test images, attacks only the
clean-correct ones (a misclassified sample is not robust), and reports

- ``accuracy``: robust accuracy at the first eps, ``per_sample`` likewise;
- ``curve``: ``[{"eps": e, "accuracy": a}, ...]`` for every eps listed;
- ``attack``, ``eps``, ``norm``, ``grad_mode``, ``gradient_free``, ``clean_accuracy``;
- ``flags`` (see :mod:`sturdynet.checks.masking`) and the zero-gradient metrics.

A check's parameters are not restated per attack: :func:`check_params` builds them from
the attack's own declaration (its ``Params`` dataclass) on top of
:class:`AttackCheckParams`, the fields every attack check shares.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..core import progress
from ..attacks import Attack
from ..attacks.base import COMMON_FIELDS
from ..core.params import rng
from ..data.base import Split
from ..quant.grad_mode import has_estimators
from .base import CheckContext, SampleParams, eval_split, summarize, value_list
from ..core.tensors import correct_mask
from . import masking


@dataclass(frozen=True)
class AttackCheckParams(SampleParams):
    """Fields of every attack check.

    ``grad_mode: auto`` attacks models with gradient estimators (quantized, binarized)
    through their straight-through estimator, float models with true gradients.
    ``tolerance`` is the accuracy gap (a fraction) above which a masking flag is raised.
    ``eot_iter > 1`` attacks with expectation over transformation (gradients and scores
    averaged over that many passes), for models with a random forward pass.
    """

    eps: Union[float, Tuple[float, ...]] = rng(0, None, default=8 / 255)
    norm: Literal["linf", "l2"] = "linf"
    grad_mode: Literal["auto", "true", "ste"] = "auto"
    samples: Optional[int] = rng(1, None, default=1000)
    masking_checks: bool = True
    tolerance: float = rng(0, 1, default=0.02)
    eot_iter: int = rng(1, None, default=1)


def attack_fields(pcls: type) -> Tuple[str, ...]:
    """The fields of an attack's declaration beyond the shared ones (what a check passes on)."""
    return tuple(f.name for f in dataclasses.fields(pcls) if f.name not in COMMON_FIELDS)


def check_params(name: str, declarations: Sequence[type], base: type = AttackCheckParams,
                 defaults: Optional[Dict[str, Any]] = None, norms: Optional[Sequence[str]] = None,
                 selector: Optional[Tuple[str, Tuple[str, ...], str]] = None,
                 extra: Sequence[Tuple[str, Any, Any]] = ()) -> type:
    """A check's parameter dataclass: ``base`` plus every field of the attack declarations
    (the first declaration's default wins for a field declared twice).

    Args:
        name: the check's name (the class is called ``<Name>CheckParams``).
        declarations: attack ``Params`` dataclasses.
        defaults: check-level defaults (e.g. ``{"eps": 0.5, "samples": 500}``).
        norms: the norms the attack supports (``norm`` becomes a Literal of them).
        selector: ``(field, choices, default)``: a Literal field choosing the attack.
        extra: further ``(name, type, dataclasses.field)`` entries.
    """
    defaults = dict(defaults or {})
    base_fields = {f.name: f for f in dataclasses.fields(base)}
    hints = typing.get_type_hints(base)
    spec: Dict[str, Tuple[Any, Any]] = {}
    for pcls in declarations:
        phints = typing.get_type_hints(pcls)
        for f in dataclasses.fields(pcls):
            if f.name in COMMON_FIELDS or f.name in spec:
                continue
            spec[f.name] = (phints[f.name], dataclasses.field(default=f.default, metadata=f.metadata))
    if selector is not None:
        sel, choices, default = selector
        spec[sel] = (Literal[tuple(choices)], dataclasses.field(default=default))
    if norms is not None:
        spec["norm"] = (Literal[tuple(norms)], dataclasses.field(default=defaults.pop("norm", norms[0])))
    for k, v in defaults.items():
        f = base_fields.get(k)
        if f is None:
            raise ValueError(f"check {name!r}: default for unknown field {k!r}")
        spec[k] = (hints[k], dataclasses.field(default=v, metadata=f.metadata))
    for fname, tp, fld in extra:
        spec[fname] = (tp, fld)
    title = "".join(p.capitalize() for p in name.replace("-", "_").split("_"))
    return dataclasses.make_dataclass(f"{title}CheckParams", [(k, t, f) for k, (t, f) in spec.items()],
                                      bases=(base,), frozen=True)


def eps_list(eps) -> Tuple[float, ...]:
    """``eps`` as a non-empty tuple of floats."""
    return value_list(eps, "eps")


def resolve_grad_mode(model: nn.Module, mode: str) -> str:
    """``auto`` -> ``ste`` for models with estimators, ``true`` otherwise."""
    if mode == "auto":
        return "ste" if has_estimators(model) else "true"
    return mode


def attack_correct(model: nn.Module, attack: Attack, split: Split, clean: Tensor, batch_size: int) -> Tensor:
    """Per-sample robust correctness: clean-correct and still correct after ``attack``."""
    out = torch.zeros_like(clean)
    idx = clean.nonzero().flatten()
    if idx.numel():
        x_adv = attack(split.x[idx], split.y[idx])
        out[idx] = correct_mask(model, x_adv, split.y[idx], batch_size)
    return out


def run_curve(model: nn.Module, split: Split, eps_values: Tuple[float, ...], make: Callable[[float], Attack],
              batch_size: int) -> Tuple[Tensor, Tensor, List[dict]]:
    """Attack at every eps; returns (clean mask, robust mask at the first eps, curve)."""
    clean = correct_mask(model, split.x, split.y, batch_size)
    first: Optional[Tensor] = None
    curve = []
    for i, eps in enumerate(eps_values):
        with progress.part(i, len(eps_values)):
            ok = attack_correct(model, make(eps), split, clean, batch_size)
        curve.append({"eps": eps, "accuracy": float(ok.float().mean()) if ok.numel() else 0.0})
        if first is None:
            first = ok
    assert first is not None
    return clean, first, curve


def finish(model: nn.Module, split: Split, params: AttackCheckParams, ctx: CheckContext, *, attack: str,
           clean: Tensor, robust: Tensor, curve: List[dict], grad_mode: Optional[str],
           gradient_free: bool = False, extra: Optional[Dict] = None, flags: Optional[List[str]] = None) -> dict:
    """The metrics block of an attack check, masking flags included."""
    metrics = summarize(robust, attack=attack, eps=curve[0]["eps"], norm=params.norm, grad_mode=grad_mode,
                        gradient_free=gradient_free, clean_accuracy=float(clean.float().mean()) if clean.numel() else 0.0,
                        curve=curve, **(extra or {}))
    flags = list(flags or [])
    if params.masking_checks:
        if not gradient_free and grad_mode is not None:
            zm, zf = masking.zero_gradient_flags(model, split.x, split.y, grad_mode, params.tolerance,
                                                 params.batch_size)
            metrics.update(zm)
            flags += zf
        flags += masking.random_forward_flags(model, split.x, params.eot_iter)
        flags += masking.curve_flags(curve, params.tolerance)
        flags += masking.compare_flags(metrics, {k: v for k, v in ctx.results.items()}, params.tolerance)
    metrics["flags"] = masking.dedupe(flags)
    return metrics


def min_norm_check(model: nn.Module, data, params: AttackCheckParams, ctx: CheckContext, *, attack: str, label: str,
                   make: Callable[[], Attack], hint: str, grad_mode: str) -> dict:
    """Robust accuracy at every eps from one run of a minimum-norm attack.

    ``make()`` builds the attack (it sets ``min_norms`` after a call, inf where it found
    nothing); it runs once on the clean-correct points. A returned example within the
    attack's eps must fool the model (checked by a forward pass), or its norm is dropped;
    a sample is robust at ``eps`` when its smallest adversarial norm exceeds ``eps``.
    Adds ``median_<norm>`` (over the points where an example was found) and
    ``found_fraction``, and flags ``unbounded_attack_failed`` below ``1 - tolerance``.
    """
    split = eval_split(data, params.samples)
    clean = correct_mask(model, split.x, split.y, params.batch_size)
    norms = torch.full((len(split),), float("inf"))
    idx = clean.nonzero().flatten()
    if idx.numel():
        atk = make()
        x_adv = atk(split.x[idx], split.y[idx])
        fooled = ~correct_mask(model, x_adv, split.y[idx], params.batch_size)
        found = atk.min_norms.clone() if atk.min_norms is not None else torch.full((idx.numel(),), float("inf"))
        found[~fooled & (found <= atk.eps)] = float("inf")
        norms[idx] = found
    curve, first = [], None
    for eps in eps_list(params.eps):
        ok = clean & (norms > eps)
        curve.append({"eps": eps, "accuracy": float(ok.float().mean()) if ok.numel() else 0.0})
        if first is None:
            first = ok
    finite = norms[idx][torch.isfinite(norms[idx])] if idx.numel() else torch.zeros(0)
    extra = {f"median_{params.norm}": float(finite.median()) if finite.numel() else None,
             "found_fraction": float(finite.numel() / max(1, idx.numel()))}
    flags = []
    if params.masking_checks and idx.numel() and extra["found_fraction"] < 1 - params.tolerance:
        flags.append(f"unbounded_attack_failed: possible gradient masking: unbounded {label} found adversarial "
                     f"examples for only {extra['found_fraction']:.1%} of the clean-correct points (an unbounded "
                     f"attack should reach 100%); {hint}")
    return finish(model, split, params, ctx, attack=attack, clean=clean, robust=first, curve=curve,
                  grad_mode=grad_mode, extra=extra, flags=flags)
