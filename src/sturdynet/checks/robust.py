"""The ``robust`` check: the gradient-mode-aware AutoAttack-style ensemble, with named
budgets and truthful scoring of randomized models.

Budgets (``budget``), AutoAttack's two documented versions (arXiv 2003.01690):

- ``standard``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries),
  100 iterations, in AutoAttack's order;
- ``rand`` (for randomized defenses): APGD-CE and APGD-DLR with EOT over 20 draws, plus
  Square scored by the mean over 20 draws per query;
- ``auto`` (default): ``rand`` when two forward passes on the same input differ, else
  ``standard``.

sturdynet adds the straight-through members on models with a gradient switch (quantizers,
binarizers, :class:`sturdynet.quant.BPDA`) and keeps a gradient-free member in both.
Setting ``attacks``, ``steps``, ``n_target_classes``, ``n_queries`` or ``eot_iter`` to
something else is allowed; the metrics then say ``budget: custom`` and
``budget_detail`` holds the numbers. ``cascade`` (default true, AutoAttack's): each
member runs only on the samples every earlier member left correct; ``cascade: false``
runs every member on every clean-correct sample (each member's own accuracy is exact).

Randomized models: when the forward pass is random, every gradient member uses EOT
(``eot_iter`` draws per gradient; the budget's 20 unless set), Square scores each query
by the mean over the same number of draws, and every verdict is measured over ``draws``
forward passes (default 10). ``accuracy`` (the headline) is the mean correctness over
draws (AutoAttack's convention); ``accuracy_majority`` counts a sample when most draws
are correct, ``accuracy_worst`` when every draw is (for each rule, on the clean input
and on every member's example). ``eot: false`` turns this off (one draw everywhere) and
raises a flag. On a deterministic model all three numbers are equal and nothing is
repeated.

Gradient masking without a switch: when true input gradients vanish (more than
``tolerance`` of the samples) and the model has no gradient switch, the gradient-free
members run with ``masked_restarts`` restarts from the start; when the gradient-free
members fool more than ``tolerance`` of the samples the gradient members left correct
(shattered gradients) on such a model, they run again with that many restarts on the
samples still robust. Both are flagged (``no_gradient_switch``): the number is an upper
bound until the op is declared with :class:`sturdynet.quant.BPDA`.

``per_attack[label]``: ``accuracy`` (cascade: after the members up to this one; else this
member's own), ``fooled``, ``attacked``, ``grad_mode``, ``seconds``;
``accuracy_by_grad_mode``, ``gradient_free_only``, ``ste_only`` and the flags of
:mod:`.masking`.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional, Tuple

from ..attacks.autoattack import BUDGETS, AutoAttack, AutoAttackParams, Member, member_spec, parse_members
from ..core import progress
from ..core.params import rng
from ..core.registry import CHECKS
from ..quant.grad_mode import has_estimators
from .attack_common import check_params, eps_list
from .base import CheckContext, eval_split, summarize
from . import masking

_OPTIONAL = dict(default=None, metadata={"range": (1, None, "[]")})

#: the shared attack-check fields, the ensemble's own declaration, and the budget fields
RobustParams = check_params("robust", [AutoAttackParams], extra=[
    ("budget", Literal["auto", "standard", "rand"], dataclasses.field(default="auto")),
    ("attacks", Optional[Tuple[str, ...]], dataclasses.field(default=None, metadata={"parse": parse_members})),
    ("steps", Optional[int], dataclasses.field(**_OPTIONAL)),
    ("n_target_classes", Optional[int], dataclasses.field(**_OPTIONAL)),
    ("n_queries", Optional[int], dataclasses.field(**_OPTIONAL)),
    ("eot_iter", Optional[int], dataclasses.field(**_OPTIONAL)),
    ("eot", bool, dataclasses.field(default=True)),
    ("draws", int, rng(1, None, default=10)),
    ("masked_restarts", int, rng(1, None, default=5)),
])


def resolve_budget(params, random: bool) -> Tuple[str, dict]:
    """(budget name, settings): the named budget with the fields the recipe set; ``custom``
    when they differ from it."""
    name = params.budget if params.budget != "auto" else ("rand" if random else "standard")
    cfg = dict(BUDGETS[name])
    for k in cfg:
        v = getattr(params, k)
        if v is not None:
            cfg[k] = tuple(v) if k == "attacks" else v
    return (name if cfg == BUDGETS[name] else "custom"), cfg


def _free_restart_overrides(attacks, overrides: dict, restarts: int) -> dict:
    out = {k: dict(v) for k, v in overrides.items()}
    for a in attacks:
        cls = member_spec(a)[2]
        if cls.gradient_free and "restarts" in {f.name for f in dataclasses.fields(cls.Params)}:
            out[a] = {**out.get(a, {}), "restarts": restarts}
    return out


def _by_grad_mode(res, cascade: bool) -> dict:
    """Worst case over the members of each gradient mode ("free": gradient-free). The
    true-gradient members run first, so theirs is exact in cascade mode too; the others
    are reported only when every member ran on every clean-correct point."""
    kinds = {"true": lambda m: m.grad_mode == "true", "ste": lambda m: m.grad_mode == "ste",
             "free": lambda m: m.gradient_free}
    out = {}
    for k, pred in kinds.items():
        if any(pred(m) for m in res.members) and (k == "true" or not cascade):
            out[k] = float((res.clean & ~res.fooled_by(pred)).float().mean())
    return out


def _per_attack(res) -> dict:
    n = max(1, int(res.clean.numel()))
    return {m.label: {"accuracy": float(res.score_after(m.label).mean()),
                      "fooled": float(res.fooled[m.label].sum()) / n,
                      "attacked": int(res.ran_on[m.label].sum()),
                      "grad_mode": m.grad_mode, "seconds": round(res.seconds[m.label], 3)} for m in res.members}


def _escalate_after(ens: AutoAttack, res, x, y, restarts: int) -> bool:
    """Shattered gradients on a model without a switch: the gradient-free members again,
    with ``restarts`` restarts, on the samples still robust. True when they ran."""
    free = [m for m in list(res.members) if m.gradient_free]
    for m in free:
        ens.run_member(Member(f"{m.label}:x{restarts}", m.attack, {**m.kwargs, "restarts": restarts}, None,
                              gradient_free=True), res, x, y)
    return bool(free)


@CHECKS.register("robust", params=RobustParams)
def robust_check(model, data, params, ctx: CheckContext) -> dict:
    """Robust accuracy under the ensemble (named budget), per attack and per eps; on
    randomized models with EOT and three scoring rules."""
    split = eval_split(data, params.samples)
    random = masking.forward_is_random(model, split.x)
    budget, cfg = resolve_budget(params, random)
    use_eot = random and params.eot
    eot_iter = cfg["eot_iter"] if use_eot else 1
    draws = params.draws if use_eot else 1
    switch = has_estimators(model)
    zero_frac, _ = masking.zero_gradient_fraction(model, split.x, split.y, "true", params.batch_size)
    masked = zero_frac > params.tolerance and not switch
    overrides = dict(params.overrides or {})
    if masked:
        overrides = _free_restart_overrides(cfg["attacks"], overrides, params.masked_restarts)
    curve, first, first_res, first_mask = [], None, None, {}
    flags, escalated = [], set()
    eps_values = eps_list(params.eps)
    for i, eps in enumerate(eps_values):
        ens = AutoAttack(model, eps=eps, norm=params.norm, attacks=cfg["attacks"],
                         grad_modes=params.grad_modes or None, steps=cfg["steps"],
                         n_target_classes=cfg["n_target_classes"], n_queries=cfg["n_queries"],
                         cascade=params.cascade, overrides=overrides, draws=draws, batch_size=params.batch_size,
                         seed=ctx.seed, eot_iter=eot_iter)
        with progress.part(i, len(eps_values)):
            res = ens.run(split.x, split.y)
        mflags = masking.ensemble_flags(res, params.tolerance)
        if (not switch and not masked and mflags[0].get("gradient_free_only", 0.0) > params.tolerance
                and _escalate_after(ens, res, split.x, split.y, params.masked_restarts)):
            escalated.add(eps)
        per = _per_attack(res)
        point = {"eps": eps, "accuracy": float(res.score.mean()) if res.score.numel() else 0.0,
                 "per_attack": {k: v["accuracy"] for k, v in per.items()}}
        if random:
            point["accuracy_majority"] = float(res.majority.float().mean())
            point["accuracy_worst"] = float(res.worst.float().mean())
        curve.append(point)
        if first is None:
            first, first_res, first_per, first_mask = res, res, per, mflags[0]
        if params.masking_checks:
            flags += [f if eps == curve[0]["eps"] else f"{f} (eps={eps:g})" for f in mflags[1]]
    res = first_res
    detail = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    detail.update(eot_iter=eot_iter, draws=draws)
    if masked or escalated:
        detail["gradient_free_restarts"] = params.masked_restarts
    metrics = summarize(res.majority if random else res.robust, attack="robust", eps=curve[0]["eps"],
                        norm=params.norm, grad_modes=sorted({m.grad_mode for m in res.members if m.grad_mode}),
                        gradient_free=False, clean_accuracy=float(res.clean_score.mean()) if len(split) else 0.0,
                        budget=budget, budget_detail=detail, random_forward=random, eot=use_eot,
                        scoring="mean over draws" if use_eot else "single draw",
                        per_attack=first_per, per_attack_scope="cumulative" if params.cascade else "own",
                        accuracy_by_grad_mode=_by_grad_mode(res, params.cascade), curve=curve, **first_mask)
    metrics["accuracy"] = curve[0]["accuracy"]
    metrics["accuracy_majority"] = float(res.majority.float().mean()) if len(split) else 0.0
    metrics["accuracy_worst"] = float(res.worst.float().mean()) if len(split) else 0.0
    if random:
        metrics["per_sample_score"] = [round(float(v), 4) for v in res.score]
    flags = _flags(model, split, params, res, random, use_eot, eot_iter, draws, masked, escalated, metrics) + flags
    if params.masking_checks:
        flags += masking.curve_flags(curve, params.tolerance)
    metrics["flags"] = masking.dedupe(flags)
    return metrics


def _flags(model, split, params, res, random, use_eot, eot_iter, draws, masked, escalated, metrics) -> list:
    """The flags about what this check did: zero gradients, no gradient switch, randomness."""
    out = []
    ran = {"ste": any(m.grad_mode == "ste" for m in res.members),
           "free": any(m.gradient_free for m in res.members)}
    if params.masking_checks:
        zm, zf = masking.zero_gradient_flags(model, split.x, split.y, "ensemble", params.tolerance,
                                             params.batch_size, ran=ran)
        metrics.update(zm)
        out += zf
    if masked or escalated:
        why = (f"{metrics.get('zero_grad_fraction', 0.0):.0%} of samples have an all-zero true input gradient"
               if masked else f"the gradient-free attack fooled {metrics.get('gradient_free_only', 0.0):.1%} of "
               "the samples that every gradient attack left correct (shattered gradients)")
        when = "from the start" if masked else "again on the samples still robust"
        at = "" if masked or not escalated or escalated == {metrics["eps"]} else \
            f" (at eps={', '.join(f'{e:g}' for e in sorted(escalated))})"
        out.append(f"no_gradient_switch: gradient masking: {why} and the model has no gradient switch, so the "
                   f"gradient-free attack ran with {params.masked_restarts} restarts {when}{at}; if the model holds "
                   "a non-differentiable op, this robust accuracy is an upper bound until the op is declared with "
                   "sturdynet.quant.BPDA")
    if random and use_eot:
        out.append(f"random_forward: two forward passes on the same input differ; the gradient attacks used EOT over "
                   f"{eot_iter} draws, the gradient-free attack scored each query by the mean over {eot_iter} draws, "
                   f"and each verdict is over {draws} draws: robust accuracy {metrics['accuracy']:.1%} (mean over "
                   f"draws), {metrics['accuracy_majority']:.1%} (majority vote), {metrics['accuracy_worst']:.1%} "
                   "(every draw correct)")
    elif random:
        out.append("random_forward: obfuscated gradients: two forward passes on the same input differ, but EOT was "
                   "turned off (eot: false): every attack and verdict used one forward draw, which overstates "
                   "robustness")
    return out
