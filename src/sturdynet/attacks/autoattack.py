"""An AutoAttack-style ensemble (Croce & Hein, arXiv 2003.01690, section 5).

The attacks run one after the other; in ``cascade`` mode (AutoAttack's) each runs only
on the points that every earlier attack left correctly classified, and a sample
counts as robust only if no attack fooled it (per-sample worst case). With
``cascade=False`` every attack runs on every clean-correct point, so each attack's own
robust accuracy is known exactly (slower).

Unlike AutoAttack, the ensemble is gradient-mode aware: on models with quantized or
binarized layers each gradient attack runs once per gradient mode (true gradients of
the deployed forward pass, then the straight-through estimator), and the
gradient-free Square attack runs last. The default list is APGD-CE and APGD-T (with
each gradient mode that applies) plus Square; AutoAttack's standard set is
``attacks=("apgd-ce", "apgd-t", "fab-t", "square")``.

Members are named by any registered attack or alias whose class allows it
(``Attack.ensemble``); whether a member needs gradients is the class attribute
``Attack.gradient_free``, and the ensemble's ``steps``, ``n_target_classes`` and
``n_queries`` go to every member whose declaration has that field.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core import progress
from ..core.params import ConfigError, rng
from ..core.registry import ATTACKS
from ..core.tensors import eval_mode, model_device
from ..quant.grad_mode import has_estimators
from .base import Attack, AttackParams

#: ensemble-level budgets passed to every member that declares the field
SHARED = ("steps", "n_target_classes", "n_queries")

#: AutoAttack's two documented versions (arXiv 2003.01690, and the authors' "rand" version
#: for randomized defenses): members in AutoAttack's order, iterations, APGD-T / FAB-T
#: targets, Square queries and EOT draws per gradient. sturdynet adds the straight-through
#: members on models with a gradient switch, and keeps the gradient-free Square in "rand".
BUDGETS: Dict[str, Dict[str, Any]] = {
    "standard": {"attacks": ("apgd-ce", "apgd-t", "fab-t", "square"), "steps": 100, "n_target_classes": 9,
                 "n_queries": 5000, "eot_iter": 1},
    "rand": {"attacks": ("apgd-ce", "apgd-dlr", "square"), "steps": 100, "n_target_classes": 9,
             "n_queries": 5000, "eot_iter": 20},
}


def member_spec(name: str) -> Tuple[str, Dict[str, Any], type]:
    """An ensemble entry (registered attack or alias) -> (attack, fixed kwargs, class)."""
    target, fixed = ATTACKS.resolve(name)
    cls = ATTACKS.get(target)
    if not getattr(cls, "ensemble", False):
        raise ValueError(f"attack {name!r} cannot be an ensemble member")
    return target, fixed, cls


def ensemble_names() -> List[str]:
    """Every name (attack or alias) the ensemble accepts."""
    names = list(ATTACKS.names()) + list(ATTACKS.aliases())
    return sorted(n for n in names if getattr(ATTACKS.get(ATTACKS.resolve(n)[0]), "ensemble", False))


def parse_members(value: Any, path: str) -> Optional[Tuple[str, ...]]:
    """Validate an ``attacks`` list (a params ``parse`` hook): known ensemble members."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(path, f"must be a non-empty list of attack names, got {value!r}")
    ok = ensemble_names()
    for i, v in enumerate(value):
        if v not in ok:
            raise ConfigError(f"{path}[{i}]", f"unknown ensemble attack {v!r} (known: {', '.join(ok)})")
    return tuple(value)


@dataclass(frozen=True)
class AutoAttackParams(AttackParams):
    """The ensemble: ``attacks`` (gradient attacks then gradient-free ones), ``grad_modes``
    (None: automatic), ``steps`` / ``n_target_classes`` / ``n_queries`` for the members that
    take them, ``cascade`` (each member only on the points still robust, AutoAttack's
    order), ``overrides`` (per entry, extra keyword arguments, e.g.
    ``{"square": {"p_init": 0.3}}``), ``draws`` (forward passes per verdict, for models
    with a random forward pass; see :class:`EnsembleResult`)."""

    attacks: Tuple[str, ...] = field(default=("apgd-ce", "apgd-t", "square"), metadata={"parse": parse_members})
    grad_modes: Optional[Tuple[Literal["true", "ste"], ...]] = None
    steps: int = rng(1, None, default=100)
    n_target_classes: int = rng(1, None, default=9)
    n_queries: int = rng(1, None, default=5000)
    cascade: bool = True
    overrides: Optional[dict] = None
    draws: int = rng(1, None, default=1)


@dataclass
class Member:
    """One attack of the ensemble: its label, registered name, kwargs, gradient mode, and
    whether it uses forward passes only."""

    label: str
    attack: str
    kwargs: dict
    grad_mode: Optional[str]
    gradient_free: bool = False


@dataclass
class EnsembleResult:
    """Outcome of :meth:`AutoAttack.run` (tensors on the CPU, one entry per sample).

    On a model with a random forward pass every verdict is measured over ``draws``
    forward passes; a sample's *score* is its fraction of correct draws (0 or 1 when
    ``draws == 1``), and the three scoring rules are: the mean of ``score`` (the headline,
    AutoAttack's convention), ``majority`` (most draws correct for the clean input and for
    every attack's example) and ``worst`` (every draw correct, for every example).

    Attributes:
        x_adv: per sample the example with the lowest score (the first fooling one), else x.
        clean: clean input correct in at least one draw (the samples the members attack).
        robust: score still above 0 (some draw correct after every attack so far).
        fooled: per member label, the samples that member fooled (majority of draws wrong)
            among those it ran on.
        ran_on: per member label, the samples it was run on.
        members: the ensemble members in order.
        seconds: wall time per member label.
        cascade: whether members ran only on still-robust points.
        clean_score, score, majority, worst: see above (``score``: the lowest over the clean
            input and every example).
        scores: per member label, the score of its example (the clean score where it did not run).
        draws: forward passes per verdict.
    """

    x_adv: Tensor
    clean: Tensor
    robust: Tensor
    fooled: Dict[str, Tensor] = field(default_factory=dict)
    ran_on: Dict[str, Tensor] = field(default_factory=dict)
    members: List[Member] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    cascade: bool = True
    clean_score: Optional[Tensor] = None
    score: Optional[Tensor] = None
    majority: Optional[Tensor] = None
    worst: Optional[Tensor] = None
    scores: Dict[str, Tensor] = field(default_factory=dict)
    draws: int = 1

    def robust_after(self, label: str) -> Tensor:
        """Cascade: robust after the members up to ``label``; else ``label``'s own."""
        if not self.cascade:
            return self.clean & ~self.fooled[label]
        out = self.clean.clone()
        for m in self.members:
            out &= ~self.fooled[m.label]
            if m.label == label:
                return out
        raise ValueError(f"no ensemble member {label!r}")

    def score_after(self, label: str) -> Tensor:
        """Like :meth:`robust_after`, as per-sample scores (the mean-over-draws rule)."""
        if not self.cascade:
            return torch.minimum(self.clean_score, self.scores[label])
        out = self.clean_score.clone()
        for m in self.members:
            out = torch.minimum(out, self.scores[m.label])
            if m.label == label:
                return out
        raise ValueError(f"no ensemble member {label!r}")

    def fooled_by(self, pred) -> Tensor:
        """Samples fooled by at least one member for which ``pred(member)`` holds."""
        out = torch.zeros_like(self.clean)
        for m in self.members:
            if pred(m):
                out |= self.fooled[m.label]
        return out


def build_members(model: nn.Module, attacks: Sequence[str], grad_modes: Optional[Sequence[str]] = None,
                  overrides: Optional[Dict[str, dict]] = None) -> List[Member]:
    """Expand attack names into members, one per gradient mode for gradient attacks.

    ``grad_modes=None`` means ``("true", "ste")`` on models with gradient estimators
    and ``("true",)`` on float models (where both would be the same attack).
    """
    if grad_modes is None:
        grad_modes = ("true", "ste") if has_estimators(model) else ("true",)
    if not grad_modes:
        raise ValueError("grad_modes must name at least one gradient mode")
    overrides = overrides or {}
    specs = {a: member_spec(a) for a in attacks}
    grad = [a for a in attacks if not specs[a][2].gradient_free]
    free = [a for a in attacks if specs[a][2].gradient_free]
    out: List[Member] = []
    for mode in grad_modes:  # all true-gradient attacks first, then the estimator ones
        for a in grad:
            name, kw, _ = specs[a]
            label = a if len(grad_modes) == 1 and mode == "true" else f"{a}:{mode}"
            out.append(Member(label, name, {**kw, **overrides.get(a, {})}, mode))
    for a in free:
        name, kw, _ = specs[a]
        out.append(Member(a, name, {**kw, **overrides.get(a, {})}, None, gradient_free=True))
    return out


@torch.no_grad()
def correct_fraction(model: nn.Module, x: Tensor, y: Tensor, draws: int = 1, batch_size: int = 256) -> Tensor:
    """Per sample, the fraction of ``draws`` forward passes (eval mode) that classify it
    correctly (CPU float tensor; 0 or 1 when ``draws == 1``)."""
    dev = model_device(model)
    out = torch.zeros(x.shape[0])
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            hits = sum((model(xb).argmax(1) == yb).float() for _ in range(draws))
            out[i:i + batch_size] = (hits / draws).cpu()
    return out


@ATTACKS.register("autoattack", params=AutoAttackParams)
class AutoAttack(Attack):
    """Gradient-mode-aware AutoAttack-style ensemble (fields: :class:`AutoAttackParams`)."""

    name = "autoattack"
    Params = AutoAttackParams
    supports_targeted = False
    ensemble = False
    check = None  # its recipe check is ``robust``

    def __init__(self, model: nn.Module, **params: Any) -> None:
        super().__init__(model, **params)
        self.members = build_members(model, self.attacks, self.grad_modes, self.overrides)
        for m in self.members:
            fields = {f.name for f in dataclasses.fields(ATTACKS.params(m.attack))}
            m.kwargs = {**{k: getattr(self, k) for k in SHARED if k in fields}, **m.kwargs}

    def run(self, x: Tensor, y: Tensor) -> EnsembleResult:
        """Run every member; see :class:`EnsembleResult`."""
        self._check_inputs(x, y, None)
        xc, yc = x.detach().cpu(), y.detach().cpu()
        c0 = correct_fraction(self.model, xc, yc, self.draws, self.batch_size)
        res = EnsembleResult(x_adv=xc.clone(), clean=c0 > 0, robust=c0 > 0, cascade=self.cascade,
                             clean_score=c0, score=c0.clone(), majority=c0 > 0.5, worst=c0 >= 1, draws=self.draws)
        for k, m in enumerate(self.members):
            with progress.part(k, len(self.members)):
                self.run_member(m, res, xc, yc)
        return res

    def run_member(self, m: Member, res: EnsembleResult, x: Tensor, y: Tensor) -> None:
        """Run one member on the samples it is due (cascade: still robust; else clean) and
        fold its outcome into ``res`` (also for a member added after :meth:`run`)."""
        if m not in res.members:
            res.members.append(m)
        idx = (res.robust if self.cascade else res.clean).nonzero().flatten()
        fooled = torch.zeros_like(res.clean)
        score = res.clean_score.clone()
        t0 = time.perf_counter()
        if idx.numel() and self.eps > 0:
            atk = ATTACKS.create(m.attack, self.model, eps=self.eps, norm=self.norm, grad_mode=m.grad_mode,
                                 batch_size=self.batch_size, seed=self.seed, eot_iter=self.eot_iter,
                                 callback=self.callback, **m.kwargs)
            adv = atk(x[idx], y[idx]).cpu()
            c = correct_fraction(self.model, adv, y[idx], self.draws, self.batch_size)
            fooled[idx] = c <= 0.5
            score[idx] = c
            better = c < res.score[idx]
            res.x_adv[idx[better]] = adv[better]
            res.score[idx] = torch.minimum(res.score[idx], c)
            res.majority[idx] &= c > 0.5
            res.worst[idx] &= c >= 1
        res.seconds[m.label] = time.perf_counter() - t0
        res.fooled[m.label] = fooled
        res.scores[m.label] = score
        res.ran_on[m.label] = torch.zeros_like(res.clean).index_fill_(0, idx, True)
        res.robust = res.score > 0

    def __call__(self, x: Tensor, y: Tensor, target: Optional[Tensor] = None) -> Tensor:
        res = self.run(x, y)
        self.check_result(x.detach().cpu(), res.x_adv)
        return res.x_adv.to(x.device)
