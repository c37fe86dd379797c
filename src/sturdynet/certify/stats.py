"""The two tests of randomized smoothing (Cohen, Rosenfeld and Kolter, arXiv 1902.02918).

- :func:`clopper_pearson_lower`: the one-sided (1 - alpha) Clopper-Pearson lower
  confidence bound on a binomial proportion, CERTIFY's ``LowerConfBound``.
- :func:`binomial_pvalue`: the two-sided p-value of the exact binomial test of
  ``p = 1/2``, PREDICT's ``BinomPValue``.

Both take arrays of counts and work element-wise; quantiles come from scipy.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
from scipy import stats

ArrayLike = Union[int, Sequence[int], np.ndarray]


def check_alpha(alpha: float) -> None:
    """Raise ValueError unless 0 < alpha < 1."""
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _counts(k: ArrayLike, n: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    k_arr, n_arr = np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64)
    if np.any(n_arr < 1) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError(f"counts must satisfy 0 <= k <= n and n >= 1, got k={k}, n={n}")
    k_b, n_b = np.broadcast_arrays(k_arr, n_arr)
    return k_b, n_b


def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) lower confidence bound on p after ``k`` successes in ``n`` trials.

    The bound is the ``alpha`` quantile of Beta(k, n - k + 1), the p at which
    P(Binomial(n, p) >= k) = alpha; it is 0 for k = 0 and alpha ** (1 / n) for k = n.

    Raises:
        ValueError: alpha outside (0, 1) or counts outside 0 <= k <= n, n >= 1.
    """
    check_alpha(alpha)
    k_arr, n_arr = _counts(k, n)
    safe_k = np.maximum(k_arr, 1)  # Beta(0, .) is undefined; the bound is 0 there
    lower = stats.beta.ppf(alpha, safe_k, n_arr - safe_k + 1)
    return np.where(k_arr == 0, 0.0, lower)


def binomial_pvalue(k: ArrayLike, n: ArrayLike) -> np.ndarray:
    """Two-sided p-value of the exact binomial test of p = 1/2 for ``k`` successes in ``n`` trials.

    Binomial(n, 1/2) is symmetric, so the two-sided p-value is
    ``min(1, 2 P(X <= min(k, n - k)))`` (``scipy.stats.binomtest(k, n, 0.5).pvalue``).

    Raises:
        ValueError: counts outside 0 <= k <= n, n >= 1.
    """
    k_arr, n_arr = _counts(k, n)
    tail = stats.binom.cdf(np.minimum(k_arr, n_arr - k_arr), n_arr, 0.5)
    return np.minimum(1.0, 2.0 * tail)
