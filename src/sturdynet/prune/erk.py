"""Per-layer density allocation: uniform and Erdos-Renyi(-Kernel).

Evci et al., "Rigging the Lottery" (RigL, arXiv 1911.11134), section 3: with the
Erdos-Renyi-Kernel (ERK) distribution the density of layer l is proportional to
``sum(shape_l) / prod(shape_l)`` (all dimensions, kernel included; plain Erdos-Renyi
"ER" uses only the output and input sizes). One scale factor ``eps`` makes the kept
weights add up to ``density * N``; a layer whose density would exceed 1 is made dense
and ``eps`` is solved again over the remaining layers (the loop of RigL's
``sparse_utils.get_sparsities``), until no layer exceeds 1.

Used by ``prune.random`` (``distribution: erk``) and by the sparse-training methods.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Literal, Optional, Sequence, Set

Shape = Sequence[int]


def _check(shapes: Sequence[Shape], density: float) -> None:
    if not shapes:
        raise ValueError("need at least one layer shape")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    for s in shapes:
        if len(s) == 0 or any(int(d) <= 0 for d in s):
            raise ValueError(f"every shape needs positive dimensions, got {tuple(s)}")


def uniform_densities(shapes: Sequence[Shape], density: float) -> List[float]:
    """The same density in every layer."""
    _check(shapes, density)
    return [float(density)] * len(shapes)


def erk_densities(shapes: Sequence[Shape], density: float, kind: Literal["erk", "er"] = "erk",
                  power_scale: float = 1.0, dense: Optional[Iterable[int]] = None) -> List[float]:
    """ERK (or ER) densities whose kept-weight total is ``density * sum(numel)``.

    Args:
        shapes: weight shapes, e.g. ``(out, in, kh, kw)`` for conv and ``(out, in)`` for linear.
        density: the overall fraction of weights to keep, in [0, 1].
        kind: ``"erk"`` uses every dimension; ``"er"`` only the first two (out, in).
        power_scale: exponent on the raw ratio (RigL's ``erk_power_scale``; 1 is ERK, 0 uniform).
        dense: indices of layers forced to density 1 (their weights count toward the total).

    Returns:
        One density per layer, each in [0, 1].

    Raises:
        ValueError: on bad shapes or density, or when the forced-dense layers alone
            exceed the requested density.
    """
    _check(shapes, density)
    if kind not in ("erk", "er"):
        raise ValueError(f"kind must be 'erk' or 'er', got {kind!r}")
    sizes = [math.prod(int(d) for d in s) for s in shapes]
    raw = []
    for s, n in zip(shapes, sizes):
        dims = [int(d) for d in (s if kind == "erk" else s[:2])]
        raw.append((sum(dims) / math.prod(dims)) ** power_scale)
    dense_set: Set[int] = set(int(i) for i in (dense or ()))
    bad = [i for i in dense_set if not 0 <= i < len(shapes)]
    if bad:
        raise ValueError(f"dense layer indices {bad} out of range for {len(shapes)} layers")
    total = sum(sizes)
    if sum(sizes[i] for i in dense_set) > density * total + 1e-9:
        raise ValueError("the forced-dense layers alone hold more weights than the requested density allows")
    while True:
        rhs, divisor = 0.0, 0.0
        for i, n in enumerate(sizes):
            if i in dense_set:
                rhs -= n * (1.0 - density)
            else:
                rhs += n * density
                divisor += raw[i] * n
        if divisor == 0.0:  # every layer dense
            break
        eps = rhs / divisor
        free = [i for i in range(len(sizes)) if i not in dense_set]
        top = max(raw[i] for i in free)
        if top * eps > 1.0:
            dense_set.update(i for i in free if raw[i] == top)
            continue
        break
    out = []
    for i in range(len(sizes)):
        out.append(1.0 if i in dense_set else min(1.0, max(0.0, eps * raw[i])))
    return out


def layer_densities(shapes: Sequence[Shape], density: float, distribution: str = "uniform",
                    dense: Optional[Iterable[int]] = None) -> List[float]:
    """Dispatch: ``uniform``, ``erk`` or ``er`` densities (``dense`` forces layers to 1)."""
    if distribution == "uniform":
        if dense:
            # The forced-dense layers' weights count: the others share the remaining budget.
            _check(shapes, density)
            sizes = [math.prod(int(d) for d in s) for s in shapes]
            dset = set(dense)
            left = density * sum(sizes) - sum(sizes[i] for i in dset)
            rest = sum(n for i, n in enumerate(sizes) if i not in dset)
            if left < -1e-9:
                raise ValueError("the forced-dense layers alone hold more weights than the requested density allows")
            d = 0.0 if rest == 0 else min(1.0, left / rest)
            return [1.0 if i in dset else d for i in range(len(shapes))]
        return uniform_densities(shapes, density)
    if distribution in ("erk", "er"):
        return erk_densities(shapes, density, kind=distribution, dense=dense)
    raise ValueError(f"distribution must be uniform, erk or er, got {distribution!r}")


def counts_from_densities(sizes: Sequence[int], densities: Sequence[float]) -> List[int]:
    """Weights kept per layer: ``round(d * n)``, then the rounding residue moved to the
    layers with the largest remainders so that the total equals ``round(sum(d * n))``."""
    if len(sizes) != len(densities):
        raise ValueError(f"{len(sizes)} sizes but {len(densities)} densities")
    exact = [d * n for d, n in zip(densities, sizes)]
    counts = [min(n, int(math.floor(e))) for e, n in zip(exact, sizes)]
    want = int(round(sum(exact)))
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))
    j = 0
    while sum(counts) < want and j < len(order):
        i = order[j]
        if counts[i] < sizes[i]:
            counts[i] += 1
        j += 1
    return counts
