"""The ``robust`` check: the gradient-mode-aware AutoAttack-style ensemble.

Default ensemble: APGD-CE and APGD-T, each with true gradients and (on models with
quantized or binarized layers) with the straight-through estimator, then the
gradient-free Square attack; in cascade mode each runs only on the points still
robust. ``accuracy`` is the per-sample worst case at the first eps. AutoAttack's
standard set is ``attacks: [apgd-ce, apgd-t, fab-t, square]`` (FAB-T: ``steps``
iterations against ``n_target_classes`` targets).

``per_attack[label]`` holds ``accuracy`` (cascade: the robust accuracy after the
attacks up to and including this one, AutoAttack's convention; ``cascade: false``:
this attack's own robust accuracy), ``fooled`` (fraction of samples it fooled among
those it ran on, over all samples), ``attacked`` (samples it ran on), ``grad_mode`` and
``seconds``. ``per_attack_scope`` says which of the two accuracies it is.
``accuracy_by_grad_mode`` gives the worst case over the true-gradient attacks alone
(what a gradient-only evaluation would report), and with ``cascade: false`` also over
the straight-through ones and the gradient-free ones.

Masking flags: zero true input gradients, a gradient-free attack fooling points the
gradient attacks missed, STE attacks fooling points the true-gradient attacks missed,
robust accuracy that rises or stays flat with eps, a random forward pass.
"""
from __future__ import annotations

from ..core import progress
from ..attacks.autoattack import AutoAttack, AutoAttackParams
from ..core.registry import CHECKS
from .attack_common import attack_fields, check_params, eps_list
from .base import CheckContext, eval_split, summarize
from . import masking

#: the check's fields: the shared attack-check ones plus the ensemble's own declaration
#: (``attacks``, ``grad_modes`` (null or empty: automatic, true plus ste on models with
#: estimators), ``steps``, ``n_target_classes``, ``n_queries``, ``cascade``, ``overrides``);
#: ``grad_mode`` (shared field) is not used here.
RobustParams = check_params("robust", [AutoAttackParams])


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
    out = {}
    for m in res.members:
        out[m.label] = {"accuracy": float(res.robust_after(m.label).float().mean()),
                        "fooled": float(res.fooled[m.label].sum()) / n,
                        "attacked": int(res.ran_on[m.label].sum()),
                        "grad_mode": m.grad_mode, "seconds": round(res.seconds[m.label], 3)}
    return out


@CHECKS.register("robust", params=RobustParams)
def robust_check(model, data, params: RobustParams, ctx: CheckContext) -> dict:
    """Worst-case robust accuracy under the ensemble, per attack and per eps."""
    split = eval_split(data, params.samples)
    curve, first, first_res = [], None, None
    flags = []
    eps_values = eps_list(params.eps)
    for i, eps in enumerate(eps_values):
        kw = {f: getattr(params, f) for f in attack_fields(AutoAttackParams)}
        kw["grad_modes"] = params.grad_modes or None
        ens = AutoAttack(model, eps=eps, norm=params.norm, batch_size=params.batch_size, seed=ctx.seed,
                         eot_iter=params.eot_iter, **kw)
        with progress.part(i, len(eps_values)):
            res = ens.run(split.x, split.y)
        per = _per_attack(res)
        curve.append({"eps": eps, "accuracy": float(res.robust.float().mean()),
                      "per_attack": {k: v["accuracy"] for k, v in per.items()}})
        mflags = masking.ensemble_flags(res, params.tolerance)
        if first is None:
            first, first_res, first_per, first_mask = res.robust, res, per, mflags[0]
        if params.masking_checks:
            flags += [f if eps == curve[0]["eps"] else f"{f} (eps={eps:g})" for f in mflags[1]]
    metrics = summarize(first, attack="robust", eps=curve[0]["eps"], norm=params.norm,
                        grad_modes=sorted({m.grad_mode for m in first_res.members if m.grad_mode}),
                        gradient_free=False, clean_accuracy=float(first_res.clean.float().mean()),
                        per_attack=first_per, per_attack_scope="cumulative" if params.cascade else "own",
                        accuracy_by_grad_mode=_by_grad_mode(first_res, params.cascade),
                        curve=curve, **first_mask)
    if params.masking_checks:
        zm, zf = masking.zero_gradient_flags(model, split.x, split.y, "ensemble", params.tolerance,
                                             params.batch_size)
        metrics.update(zm)
        flags = zf + flags
        flags += masking.random_forward_flags(model, split.x, params.eot_iter)
        flags += masking.curve_flags(curve, params.tolerance)
    metrics["flags"] = masking.dedupe(flags)
    return metrics
