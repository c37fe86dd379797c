"""One recipe check per registered attack, generated from the attack's own declaration.

For every attack whose class says ``check = "curve"`` or ``"min_norm"`` (see
:class:`sturdynet.attacks.Attack`) a check of the same name is registered; its
parameters are :class:`~.attack_common.AttackCheckParams` plus the fields of the
attack's ``Params`` dataclass (:func:`~.attack_common.check_params`), so a new attack
gets its check by declaring its parameters, and nothing here changes (also an attack
registered after this module was imported: the check registry asks again on a miss).

- ``curve`` (``fgsm``, ``pgd``, ``apgd``, ``square``): the attack runs at every eps on the
  clean-correct points (:func:`~.attack_common.run_curve`); gradient-free attacks run
  without a gradient mode.
- ``min_norm`` (``cw``, ``fab``): one unbounded run gives every eps
  (:func:`~.attack_common.min_norm_check`), with ``median_<norm>`` and ``found_fraction``.

An attack with ``check_into = (check, field, value)`` is run by another attack's check
when that field has that value: ``{check: apgd, loss: dlr-t}`` runs APGD-T,
``{check: fab, attack: fab-t}`` runs FAB-T (the field gains the value as a choice, and
the check gains the attack's extra fields, such as ``n_target_classes``).
"""
from __future__ import annotations

import typing
from typing import Dict, List, Tuple

from ..core.registry import ATTACKS, CHECKS
from .attack_common import (attack_fields, check_params, eps_list, finish, min_norm_check, resolve_grad_mode,
                            run_curve)
from .base import CheckContext, eval_split


def _selector(host: type, folded: List[type]) -> Tuple[str, Tuple[str, ...], str] | None:
    if not folded:
        return None
    field = folded[0].check_into[1]
    own = typing.get_type_hints(host.Params).get(field)
    if own is not None:
        choices = tuple(typing.get_args(own))
        default = next(f.default for f in host.Params.__dataclass_fields__.values() if f.name == field)
    else:
        choices, default = (host.name,), host.name
    return field, choices + tuple(c.check_into[2] for c in folded), default


def _choose(host: type, folded: List[type], params) -> type:
    for cls in folded:
        _, field, value = cls.check_into
        if getattr(params, field) == value:
            return cls
    return host


def make_check(host: type, folded: List[type]):
    """The check function for ``host`` (and the attacks folded into its check)."""
    selector = _selector(host, folded)

    def check(model, data, params, ctx: CheckContext) -> dict:
        cls = _choose(host, folded, params)
        skip = selector[0] if selector and cls is not host else None  # the value that chose cls
        kw = {f: getattr(params, f) for f in attack_fields(cls.Params) if f != skip}
        mode = resolve_grad_mode(model, params.grad_mode)
        label = cls.check_label(params)
        if host.check == "min_norm":
            return min_norm_check(
                model, data, params, ctx, attack=label, label=cls.display or label, hint=cls.budget_hint,
                grad_mode=mode, make=lambda: ATTACKS.create(
                    cls.name, model, eps=float("inf"), norm=params.norm, grad_mode=mode,
                    batch_size=params.batch_size, seed=ctx.seed, eot_iter=params.eot_iter, **kw))
        split = eval_split(data, params.samples)
        grad_mode = None if cls.gradient_free else mode

        def make(eps: float):
            return ATTACKS.create(cls.name, model, eps=eps, norm=params.norm, grad_mode=grad_mode,
                                  batch_size=params.batch_size, seed=ctx.seed, eot_iter=params.eot_iter, **kw)

        clean, robust, curve = run_curve(model, split, eps_list(params.eps), make, params.batch_size)
        return finish(model, split, params, ctx, attack=label, clean=clean, robust=robust, curve=curve,
                      grad_mode=grad_mode, gradient_free=cls.gradient_free,
                      extra={f: getattr(params, f) for f in cls.report_fields})

    names = ", ".join(c.name for c in [host] + folded)
    check.__name__ = f"{host.name.replace('-', '_')}_check"
    check.__doc__ = (f"Robust accuracy under {host.display or host.name} ({names}); "
                     f"{'one unbounded run gives every eps' if host.check == 'min_norm' else 'one run per eps'}.")
    return check


def register_attack_checks() -> List[str]:
    """Register a check for every attack that asks for one and has none yet; returns the new names."""
    hosts: Dict[str, type] = {}
    folded: Dict[str, List[type]] = {}
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        if cls.check_into is not None:
            folded.setdefault(cls.check_into[0], []).append(cls)
        elif cls.check in ("curve", "min_norm"):
            hosts[name] = cls
    new = []
    for name, host in hosts.items():
        if CHECKS.registered(name):
            continue
        extra = folded.get(name, [])
        pcls = check_params(name, [host.Params] + [c.Params for c in extra], defaults=host.check_defaults,
                            norms=host.norms, selector=_selector(host, extra))
        CHECKS.register(name, params=pcls)(make_check(host, extra))
        new.append(name)
    return new


CHECKS.add_source(register_attack_checks)
