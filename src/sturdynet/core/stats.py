"""Small statistics for reported numbers: Wilson intervals, mean and spread across seeds.

* Wilson score interval (E. B. Wilson, 1927, "Probable inference, the law of succession, and
  statistical inference", JASA 22:209): for ``k`` successes in ``n`` trials and
  ``z = 1.96`` (95 %), centre ``(p + z^2/2n) / (1 + z^2/n)`` and half-width
  ``z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)``. Unlike the normal interval it stays inside
  [0, 1] and is not empty at ``p = 0`` or ``1``.
* Across seeds: mean, sample standard deviation (``n - 1``), and a 95 % Student-t interval
  of the mean.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> Tuple[float, float]:
    """95 % Wilson score interval of a proportion ``successes / n`` (``(nan, nan)`` when n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = min(max(successes / n, 0.0), 1.0)
    z2 = z * z
    den = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_std(values: Sequence[float], ddof: int = 1) -> Dict[str, float]:
    """Mean and standard deviation with ``n - ddof`` in the denominator: the sample std by
    default, the population std (``ddof=0``, the fault checks' trial spread) on request;
    0 when there are no more than ``ddof`` values."""
    vals = [float(v) for v in values]
    if not vals:
        return {"mean": float("nan"), "std": float("nan")}
    m = sum(vals) / len(vals)
    if len(vals) <= ddof:
        return {"mean": m, "std": 0.0}
    return {"mean": m, "std": math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - ddof))}


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student-t quantile (scipy); the normal quantile when scipy is missing."""
    try:
        from scipy.stats import t

        return float(t.ppf(q, df))
    except ImportError:  # pragma: no cover - scipy is a dependency
        return Z95


def mean_interval(values: Sequence[float]) -> Optional[Tuple[float, float]]:
    """95 % t interval of the mean of ``values`` (None for fewer than two values)."""
    if len(values) < 2:
        return None
    ms = mean_std(values)
    half = t_quantile(len(values) - 1) * ms["std"] / math.sqrt(len(values))
    return ms["mean"] - half, ms["mean"] + half


def overlap(a: Optional[Sequence[float]], b: Optional[Sequence[float]]) -> bool:
    """Do two intervals ``[lo, hi]`` overlap? (True when either is unknown: no claim of a difference.)"""
    if not a or not b or any(x is None or math.isnan(x) for x in (*a, *b)):
        return True
    return a[0] <= b[1] and b[0] <= a[1]
