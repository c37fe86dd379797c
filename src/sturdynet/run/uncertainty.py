"""Uncertainty of reported numbers, added to the results.json view by the store.

* Every accuracy measured on ``samples`` test images gets ``ci95: [lo, hi]``, the 95 %
  Wilson interval of ``round(accuracy * samples)`` correct out of ``samples`` (curve points
  too). Accuracies that are means over random trials (fault checks: BER, random flips, BFA)
  get no Wilson interval; their curve points keep ``std`` over trials and the per-trial
  values (``trial_accuracy``) as the checks write them, and the check gets ``accuracy_std``.
* A variant run on several seeds is shown as one record: every accuracy is the mean over
  the seeds that finished, with ``accuracy_std`` (sample std), ``seed_accuracy``
  ({seed: value}) and ``ci95`` = the hull of the pooled Wilson interval and the 95 %
  Student-t interval of the mean, so it covers both test-set sampling and seed-to-seed
  spread. The per-seed records stay in ``cells``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Mapping, Optional

from ..core.stats import mean_interval, mean_std, wilson


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _trial_mean(m: Mapping[str, Any]) -> bool:
    return m.get("kind") == "fault" or any(isinstance(p, Mapping) and "trials" in p for p in m.get("curve") or [])


def _ci(acc: float, n: int) -> List[float]:
    lo, hi = wilson(round(acc * n), n)
    return [lo, hi]


def annotate_metrics(m: Dict[str, Any]) -> Dict[str, Any]:
    """Add ``ci95`` (Wilson) or ``accuracy_std`` (trial spread) to one check's metrics, in place."""
    n = m.get("samples")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0 or not _num(m.get("accuracy")):
        return m
    if _trial_mean(m):
        for p in m.get("curve") or []:
            if isinstance(p, Mapping) and p.get("accuracy") == m["accuracy"] and _num(p.get("std")):
                m.setdefault("accuracy_std", p["std"])
                break
        return m
    m["ci95"] = _ci(m["accuracy"], n)
    for p in m.get("curve") or []:
        if isinstance(p, dict) and _num(p.get("accuracy")) and "trials" not in p:
            p["ci95"] = _ci(p["accuracy"], n)
    return m


def annotate_record(rec: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a variant record with every check's metrics annotated."""
    out = copy.deepcopy(rec)
    for m in (out.get("metrics") or {}).values():
        if isinstance(m, dict):
            annotate_metrics(m)
    return out


def _seed_stats(values: Dict[int, float], pooled: Optional[List[float]]) -> Dict[str, Any]:
    vals = list(values.values())
    ms = mean_std(vals)
    out: Dict[str, Any] = {"accuracy": ms["mean"], "accuracy_std": ms["std"],
                           "seed_accuracy": {str(s): v for s, v in values.items()}}
    iv = mean_interval(vals)
    lo_hi = [x for x in (pooled, list(iv) if iv else None) if x]
    if lo_hi:
        out["ci95"] = [max(0.0, min(x[0] for x in lo_hi)), min(1.0, max(x[1] for x in lo_hi))]
    return out


def _aggregate_metrics(per_seed: Dict[int, Mapping[str, Any]]) -> Dict[str, Any]:
    seeds = sorted(per_seed)
    first = copy.deepcopy(dict(per_seed[seeds[0]]))
    accs = {s: per_seed[s]["accuracy"] for s in seeds if _num(per_seed[s].get("accuracy"))}
    if not accs:
        return first
    n = first.get("samples")
    pooled = None
    if isinstance(n, int) and n > 0 and not _trial_mean(first) and \
            all(per_seed[s].get("samples") == n for s in accs):
        pooled = list(wilson(sum(round(a * n) for a in accs.values()), n * len(accs)))
    first.pop("ci95", None)
    first.update(_seed_stats(accs, pooled))
    first["seeds"] = len(accs)
    curves = [per_seed[s].get("curve") or [] for s in accs]
    if curves and all(len(c) == len(curves[0]) for c in curves) and curves[0]:
        agg = []
        for i, p in enumerate(first.get("curve") or []):
            vals = {s: c[i].get("accuracy") for s, c in zip(accs, curves)}
            if not all(_num(v) for v in vals.values()) or \
                    len({repr({k: v for k, v in c[i].items() if not k.endswith(('accuracy', 'std', 'ci95'))})
                         for c in curves}) > 1:
                agg.append(p)
                continue
            q = {k: v for k, v in p.items() if k not in ("ci95", "accuracy", "accuracy_std")}
            pp = None
            if pooled is not None and "trials" not in p:
                pp = list(wilson(sum(round(v * n) for v in vals.values()), n * len(vals)))
            q.update(_seed_stats(vals, pp))
            agg.append(q)
        first["curve"] = agg
    return first


def aggregate_seeds(records: Dict[int, Dict[str, Any]], order: List[int]) -> Dict[str, Any]:
    """One variant record from its per-seed records (already annotated).

    ``status`` is ``ok`` when every seed in ``order`` finished ok, ``failed`` when one failed
    (``error`` names the seeds), else ``pending``. Metrics are aggregated over the ok seeds.
    """
    seeds = [s for s in order if s in records]
    ok = [s for s in seeds if records[s].get("status") == "ok"]
    base = copy.deepcopy(records[ok[0] if ok else seeds[0]])
    failed = [s for s in seeds if records[s].get("status") == "failed"]
    if failed:
        base["status"] = "failed"
        base["error"] = "; ".join(f"seed {s}: {records[s].get('error')}" for s in failed)
    elif len(ok) < len(order):
        base["status"] = "pending" if ok else base.get("status", "pending")
    if ok:
        checks: List[str] = []
        for s in ok:
            checks += [c for c in records[s].get("metrics") or {} if c not in checks]
        metrics = {}
        for cid in checks:
            per = {s: records[s]["metrics"][cid] for s in ok
                   if cid in (records[s].get("metrics") or {}) and "error" not in records[s]["metrics"][cid]}
            metrics[cid] = _aggregate_metrics(per) if per else next(
                records[s]["metrics"][cid] for s in ok if cid in (records[s].get("metrics") or {}))
        base["metrics"] = metrics
    base["seeds"] = ok
    base.pop("seed", None)
    return base
