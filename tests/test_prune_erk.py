"""ERK / ER density allocation (RigL, arXiv 1911.11134) on hand-made shapes."""
from __future__ import annotations

import math

import pytest

from sturdynet.prune.erk import counts_from_densities, erk_densities, layer_densities, uniform_densities


def _kept(shapes, dens):
    return sum(d * math.prod(s) for d, s in zip(dens, shapes))


def test_erk_known_answer_without_capping():
    # raw ratios: (10+10)/100 = 0.2 and (100+10)/1000 = 0.11; eps = 550 / (0.2*100 + 0.11*1000) = 550/130
    dens = erk_densities([(10, 10), (100, 10)], 0.5)
    eps = 550 / 130
    assert dens == pytest.approx([0.2 * eps, 0.11 * eps])
    assert _kept([(10, 10), (100, 10)], dens) == pytest.approx(550)


def test_erk_caps_at_one_and_redistributes():
    # at density 0.9 the small layer would get 0.2 * 990/130 > 1: it becomes dense and the
    # big layer takes the rest: (990 - 100) / 1000 = 0.89
    dens = erk_densities([(10, 10), (100, 10)], 0.9)
    assert dens == pytest.approx([1.0, 0.89])


def test_erk_uses_kernel_dims_and_er_does_not():
    shapes = [(16, 3, 3, 3), (32, 16, 3, 3), (10, 32)]
    erk = erk_densities(shapes, 0.2)
    er = erk_densities(shapes, 0.2, kind="er")
    raw_erk = [sum(s) / math.prod(s) for s in shapes]
    raw_er = [sum(s[:2]) / math.prod(s[:2]) for s in shapes]
    for dens, raw in ((erk, raw_erk), (er, raw_er)):
        free = [i for i, d in enumerate(dens) if d < 1]
        ratios = {round(dens[i] / raw[i], 9) for i in free}
        assert len(ratios) == 1  # one eps for every uncapped layer
        assert _kept(shapes, dens) == pytest.approx(0.2 * sum(math.prod(s) for s in shapes))
        assert all(0 <= d <= 1 for d in dens)


def test_erk_forced_dense_layer_counts_toward_total():
    shapes = [(10, 10), (100, 10), (100, 100)]
    dens = erk_densities(shapes, 0.3, dense=[0])
    assert dens[0] == 1.0
    assert _kept(shapes, dens) == pytest.approx(0.3 * 11100)


def test_uniform_and_dispatch():
    shapes = [(4, 4), (8, 4)]
    assert uniform_densities(shapes, 0.25) == [0.25, 0.25]
    assert layer_densities(shapes, 0.25, "uniform") == [0.25, 0.25]
    assert layer_densities(shapes, 0.25, "erk") == erk_densities(shapes, 0.25)
    dens = layer_densities(shapes, 0.5, "uniform", dense=[0])
    assert dens[0] == 1.0 and _kept(shapes, dens) == pytest.approx(24)


def test_counts_add_up_exactly():
    sizes = [100, 1000, 7]
    dens = erk_densities([(10, 10), (100, 10), (7, 1)], 0.37)
    counts = counts_from_densities(sizes, dens)
    assert sum(counts) == round(0.37 * sum(sizes))
    assert all(0 <= c <= n for c, n in zip(counts, sizes))


@pytest.mark.parametrize("bad", [dict(shapes=[], density=0.5), dict(shapes=[(3, 0)], density=0.5),
                                 dict(shapes=[(3, 3)], density=1.5), dict(shapes=[(3, 3)], density=0.5, kind="x"),
                                 dict(shapes=[(3, 3)], density=0.5, dense=[4]),
                                 dict(shapes=[(100, 100), (2, 2)], density=0.1, dense=[0])])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        erk_densities(**bad)
    with pytest.raises(ValueError):
        layer_densities([(3, 3)], 0.5, "gaussian")
