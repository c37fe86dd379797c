"""Intervals and spreads of reported accuracies, read from results.json metrics.

The store writes ``ci95`` (95 % Wilson interval, or with several seeds the hull of the pooled
Wilson and the Student-t interval of the mean), ``accuracy_std`` (spread over seeds or over
fault trials) and ``seed_accuracy``. Results written before those fields existed get a Wilson
interval computed here from ``accuracy`` and ``samples`` where asked (:func:`interval`
``fallback=True``), so that ``sturdynet compare`` works on older runs too.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Tuple

from ..core.stats import wilson
from .format import fmt_pct


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def interval(m: Optional[Mapping[str, Any]], fallback: bool = False) -> Optional[Tuple[float, float]]:
    """``(lo, hi)`` of a check's accuracy, or None.

    Args:
        m: the check's metrics (or a curve point).
        fallback: compute a Wilson interval from ``samples`` when ``ci95`` is missing (not
            for means over fault trials, which have no sample-count interval).
    """
    if not m:
        return None
    ci = m.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(x) for x in ci):
        return float(ci[0]), float(ci[1])
    n, acc = m.get("samples"), m.get("accuracy")
    if fallback and isinstance(n, int) and n > 0 and _num(acc) and m.get("kind") != "fault":
        return wilson(round(acc * n), n)
    return None


def fmt_acc(m: Optional[Mapping[str, Any]], fallback: bool = False) -> str:
    """An accuracy with its uncertainty: ``"91.2% [88.1, 93.6]"``; with several seeds
    ``"91.2% ±1.3 [88.9, 93.1]"`` (± = std over seeds); for a mean over fault trials
    ``"91.2% ±1.3"`` (std over trials). Plain ``"91.2%"`` when nothing is known."""
    if not m or not _num(m.get("accuracy")):
        return fmt_pct(None if not m else m.get("accuracy"))
    text = fmt_pct(m["accuracy"])
    if _num(m.get("accuracy_std")) and (m.get("seeds", 0) > 1 or m.get("kind") == "fault"
                                        or m.get("ci95") is None):
        text += f" ±{100 * m['accuracy_std']:.1f}"
    iv = interval(m, fallback)
    if iv is not None:
        text += f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"
    return text
