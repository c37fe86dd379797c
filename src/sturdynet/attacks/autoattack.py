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
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..quant.grad_mode import has_estimators
from ..core.registry import ATTACKS
from .base import Attack

# Ensemble entries: short name -> (registered attack, fixed keyword arguments).
ENTRIES: Dict[str, Tuple[str, dict]] = {
    "apgd-ce": ("apgd", {"loss": "ce"}),
    "apgd-dlr": ("apgd", {"loss": "dlr"}),
    "apgd-t": ("apgd-t", {"loss": "dlr"}),
    "fab": ("fab", {}),
    "fab-t": ("fab-t", {}),
    "pgd": ("pgd", {}),
    "fgsm": ("fgsm", {}),
    "square": ("square", {}),
}
GRADIENT_FREE = ("square",)


@dataclass
class Member:
    """One attack of the ensemble: its label, registered name, kwargs and gradient mode."""

    label: str
    attack: str
    kwargs: dict
    grad_mode: Optional[str]

    @property
    def gradient_free(self) -> bool:
        return self.grad_mode is None


@dataclass
class EnsembleResult:
    """Outcome of :meth:`AutoAttack.run` (tensors on the CPU, one entry per sample).

    Attributes:
        x_adv: for each fooled sample the first adversarial example found, else x.
        clean: correctly classified without attack.
        robust: clean and not fooled by any attack (the worst case).
        fooled: per member label, the samples that member fooled (among those it ran on).
        ran_on: per member label, the samples it was run on.
        members: the ensemble members in order.
        seconds: wall time per member label.
        cascade: whether members ran only on still-robust points.
    """

    x_adv: Tensor
    clean: Tensor
    robust: Tensor
    fooled: Dict[str, Tensor] = field(default_factory=dict)
    ran_on: Dict[str, Tensor] = field(default_factory=dict)
    members: List[Member] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    cascade: bool = True

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
    grad = [a for a in attacks if a not in GRADIENT_FREE]
    free = [a for a in attacks if a in GRADIENT_FREE]
    out: List[Member] = []
    for a in list(attacks):
        if a not in ENTRIES:
            raise ValueError(f"unknown ensemble attack {a!r}; available: {', '.join(ENTRIES)}")
    for mode in grad_modes:  # all true-gradient attacks first, then the estimator ones
        for a in grad:
            name, kw = ENTRIES[a]
            label = a if len(grad_modes) == 1 and mode == "true" else f"{a}:{mode}"
            out.append(Member(label, name, {**kw, **overrides.get(a, {})}, mode))
    for a in free:
        name, kw = ENTRIES[a]
        out.append(Member(a, name, {**kw, **overrides.get(a, {})}, None))
    return out


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    was = model.training
    model.eval()
    try:
        outs = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was)
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.long)


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """Gradient-mode-aware AutoAttack-style ensemble.

    Args:
        attacks: ensemble entries (see ``ENTRIES``), gradient attacks then Square.
        grad_modes: gradient modes for the gradient attacks (None: automatic).
        steps: iterations of APGD / PGD / FAB members.
        n_target_classes: target classes of APGD-T and FAB-T.
        n_queries: query budget of Square.
        cascade: run each member only on points still robust (AutoAttack).
        overrides: per entry, extra keyword arguments (e.g. ``{"square": {"p_init": 0.3}}``).
    """

    name = "autoattack"
    supports_targeted = False

    def __init__(self, model: nn.Module, *, eps: float = 8 / 255, attacks: Sequence[str] = ("apgd-ce", "apgd-t", "square"),
                 grad_modes: Optional[Sequence[str]] = None, steps: int = 100, n_target_classes: int = 9,
                 n_queries: int = 5000, cascade: bool = True, overrides: Optional[Dict[str, dict]] = None,
                 **kw) -> None:
        super().__init__(model, eps=eps, **kw)
        if not attacks:
            raise ValueError("the ensemble needs at least one attack")
        if steps < 1 or n_target_classes < 1 or n_queries < 1:
            raise ValueError("steps, n_target_classes and n_queries must be >= 1")
        base = {"apgd": {"steps": steps}, "apgd-t": {"steps": steps, "n_target_classes": n_target_classes},
                "pgd": {"steps": steps}, "square": {"n_queries": n_queries}, "fab": {"steps": steps},
                "fab-t": {"steps": steps, "n_target_classes": n_target_classes}}
        self.members = build_members(model, attacks, grad_modes, overrides)
        for m in self.members:
            m.kwargs = {**base.get(m.attack, {}), **m.kwargs}
        self.cascade = cascade

    def run(self, x: Tensor, y: Tensor) -> EnsembleResult:
        """Run every member; see :class:`EnsembleResult`."""
        self._check_inputs(x, y, None)
        dev = self.device
        xc, yc = x.detach().cpu(), y.detach().cpu()
        clean = _predict(self.model, xc, self.batch_size, dev) == yc
        res = EnsembleResult(x_adv=xc.clone(), clean=clean, robust=clean.clone(), members=list(self.members),
                             cascade=self.cascade)
        for m in self.members:
            idx = (res.robust if self.cascade else clean).nonzero().flatten()
            fooled = torch.zeros_like(clean)
            t0 = time.perf_counter()
            if idx.numel() and self.eps > 0:
                atk = ATTACKS.get(m.attack)(self.model, eps=self.eps, norm=self.norm, grad_mode=m.grad_mode,
                                            batch_size=self.batch_size, seed=self.seed, eot_iter=self.eot_iter,
                                            **m.kwargs)
                adv = atk(xc[idx], yc[idx]).cpu()
                hit = _predict(self.model, adv, self.batch_size, dev) != yc[idx]
                fooled[idx[hit]] = True
                first = hit & res.robust[idx]
                res.x_adv[idx[first]] = adv[first]
            res.seconds[m.label] = time.perf_counter() - t0
            res.fooled[m.label] = fooled
            res.ran_on[m.label] = torch.zeros_like(clean).index_fill_(0, idx, True)
            res.robust &= ~fooled
        return res

    def __call__(self, x: Tensor, y: Tensor, target: Optional[Tensor] = None) -> Tensor:
        res = self.run(x, y)
        self.check_result(x.detach().cpu(), res.x_adv)
        return res.x_adv.to(x.device)
