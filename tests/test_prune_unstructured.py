"""Unstructured pruners: known answers on hand-made tensors, exact sparsity, determinism."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sturdynet.core.params import ConfigError, from_dict
from sturdynet.prune.global_magnitude import mt_prune_counts
from sturdynet.prune.lamp import lamp_scores
from sturdynet.core.masks import get_masks, mask_sparsity
from sturdynet.core.registry import METHODS

UNSTRUCTURED = ["prune.global_magnitude", "prune.layerwise_magnitude", "prune.lamp", "prune.random"]


def _apply(name, model, **kw):
    return METHODS.get(name)().apply(model, from_dict(METHODS.params(name), kw, name))


def _mlp(*weights):
    """A Linear chain whose weights are the given 2-d tensors."""
    layers = []
    for w in weights:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        layers.append(lin)
    return nn.Sequential(*layers)


def test_lamp_scores_known_answer():
    # magnitudes ascending 1, 2, 3, 4 -> squares 1, 4, 9, 16; suffix sums 30, 29, 25, 16
    w = torch.tensor([[3.0, -1.0], [4.0, -2.0]])
    expect = torch.tensor([[9 / 25, 1 / 30], [16 / 16, 4 / 29]], dtype=torch.float64)
    assert torch.allclose(lamp_scores(w), expect, atol=1e-12)


def test_lamp_scores_ties_and_zeros():
    s = lamp_scores(torch.tensor([2.0, 2.0, 0.0]))
    # sorted: 0 (pos 2), 2 (pos 0), 2 (pos 1): scores 0/8, 4/8, 4/4
    assert torch.allclose(s, torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))


def test_lamp_prunes_lowest_scores_globally():
    # layer A weights 1..4 (scores 1/30, 4/29, 9/25, 1); layer B: 10, 20 (scores 100/500, 1)
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[10.0, 20.0]])
    model = _mlp(a.t().contiguous(), b)
    pruned = _apply("prune.lamp", model, sparsity=0.5)  # 3 of 6
    masks = get_masks(pruned)
    # lowest three scores: 1/30 (a:1), 4/29 (a:2), 100/500 = 0.2 (b:10); 9/25 = 0.36 stays
    assert torch.equal(masks["0.weight"], torch.tensor([[False, True], [False, True]]))
    assert torch.equal(masks["1.weight"], torch.tensor([[False, True]]))
    # global magnitude would instead keep every large weight of layer B
    gm = get_masks(_apply("prune.global_magnitude", model, sparsity=0.5))
    assert gm["1.weight"].all() and int(gm["0.weight"].sum()) == 1


def test_lamp_never_empties_a_layer():
    torch.manual_seed(0)
    model = _mlp(torch.randn(50, 50) * 10, torch.randn(4, 50) * 0.001)
    masks = get_masks(_apply("prune.lamp", model, sparsity=0.98))
    assert all(int(m.sum()) >= 1 for m in masks.values())


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.98, 0.999])
def test_global_magnitude_exact_count_and_threshold(sparsity):
    torch.manual_seed(1)
    model = _mlp(torch.randn(37, 23), torch.randn(11, 37), torch.randn(3, 11))
    n = sum(m.weight.numel() for m in model)
    pruned = _apply("prune.global_magnitude", model, sparsity=sparsity)
    zeros = sum(int((~k).sum()) for k in get_masks(pruned).values())
    assert abs(zeros - sparsity * n) <= 1
    # every kept |w| >= every pruned |w| (a single global threshold)
    kept = torch.cat([m.weight.abs()[k] for m, (_, k) in zip(model, get_masks(pruned).items())])
    gone = torch.cat([m.weight.abs()[~k] for m, (_, k) in zip(model, get_masks(pruned).items())])
    if len(kept) and len(gone):
        assert kept.min() >= gone.max()


def test_layerwise_magnitude_same_fraction_per_layer():
    torch.manual_seed(2)
    model = _mlp(torch.randn(20, 10), torch.randn(30, 20) * 100, torch.randn(5, 30) * 0.01)
    masks = list(get_masks(_apply("prune.layerwise_magnitude", model, sparsity=0.6)).values())
    for m, k in zip(model, masks):
        assert int((~k).sum()) == round(0.6 * m.weight.numel())
        assert m.weight.abs()[k].min() >= m.weight.abs()[~k].max()


def test_layerwise_known_answer():
    model = _mlp(torch.tensor([[0.5, -3.0, 2.0, 0.1]]))
    mask = get_masks(_apply("prune.layerwise_magnitude", model, sparsity=0.5))["0.weight"]
    assert torch.equal(mask, torch.tensor([[False, True, True, False]]))


def test_min_keep_protects_small_layers():
    model = _mlp(torch.full((10, 10), 5.0) + torch.rand(10, 10), torch.full((2, 10), 0.01))
    plain = get_masks(_apply("prune.global_magnitude", model, sparsity=0.8))
    assert int(plain["1.weight"].sum()) == 0  # layer collapse
    guarded = get_masks(_apply("prune.global_magnitude", model, sparsity=0.8, min_keep=0.2))
    assert int(guarded["1.weight"].sum()) == 4  # ceil(0.2 * 20)
    assert sum(int((~k).sum()) for k in guarded.values()) == round(0.8 * 120)


def test_minimum_threshold_counts_known_answer():
    # sizes 1000, 100, 10; global pruning took 800, 100, 10 (target 910 of 1110 = 0.81982)
    # MT = 20: the 10-weight layer stays dense, the 100-weight layer keeps exactly 20,
    # the big layer takes the rest: 910 - 80 = 830
    counts = mt_prune_counts([1000, 100, 10], [800, 100, 10], 910 / 1110, 20)
    assert counts == [830, 80, 0]


def test_minimum_threshold_through_the_method():
    torch.manual_seed(3)
    big = torch.randn(100, 100) * 10
    model = _mlp(big, torch.randn(10, 100) * 0.01)
    n = 100 * 100 + 10 * 100
    p = dict(sparsity=0.9, min_threshold=0.005)  # MT = int(0.005 * 11000) = 55 weights
    masks = list(get_masks(_apply("prune.global_magnitude", model, **p)).values())
    assert int(masks[1].sum()) == 55
    assert sum(int((~k).sum()) for k in masks) == round(0.9 * n)
    # inside each layer the smallest magnitudes went
    for m, k in zip(model, masks):
        if (~k).any():
            assert m.weight.abs()[k].min() >= m.weight.abs()[~k].max()


def test_minimum_threshold_infeasible_is_an_error():
    with pytest.raises(ValueError, match="min_threshold"):
        mt_prune_counts([100, 100], [90, 90], 0.9, 50)
    with pytest.raises(ConfigError, match="not both"):
        from_dict(METHODS.params("prune.global_magnitude"), {"min_keep": 0.1, "min_threshold": 0.1})


def test_random_is_seeded_and_exact():
    torch.manual_seed(4)
    model = _mlp(torch.randn(40, 30), torch.randn(10, 40))
    a = get_masks(_apply("prune.random", model, sparsity=0.7, seed=5))
    b = get_masks(_apply("prune.random", model, sparsity=0.7, seed=5))
    c = get_masks(_apply("prune.random", model, sparsity=0.7, seed=6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    for m, k in zip(model, a.values()):
        assert int(k.sum()) == round(0.3 * m.weight.numel())


def test_random_erk_follows_erk_densities():
    from sturdynet.prune.erk import erk_densities

    model = _mlp(torch.ones(10, 10), torch.ones(100, 10))
    masks = list(get_masks(_apply("prune.random", model, sparsity=0.5, distribution="erk")).values())
    dens = erk_densities([(10, 10), (100, 10)], 0.5)
    assert [int(k.sum()) for k in masks] == [round(d * n) for d, n in zip(dens, (100, 1000))]
    assert sum(int(k.sum()) for k in masks) == 550


@pytest.mark.parametrize("name", UNSTRUCTURED)
def test_every_pruner_reaches_its_sparsity_on_a_cnn(name, trained_cnn):
    pruned = _apply(name, trained_cnn, sparsity=0.9)
    assert mask_sparsity(pruned) == pytest.approx(0.9, abs=1e-3)
    assert pruned is not trained_cnn and mask_sparsity(trained_cnn) == 0.0


@pytest.mark.parametrize("name", UNSTRUCTURED)
def test_bad_parameters_are_rejected(name):
    with pytest.raises(ConfigError, match="sparsity"):
        from_dict(METHODS.params(name), {"sparsity": 1.0})
    with pytest.raises(ConfigError, match="sparsity"):
        from_dict(METHODS.params(name), {"sparsity": -0.1})


def test_exclude_first_and_last(trained_cnn):
    pruned = _apply("prune.global_magnitude", trained_cnn, sparsity=0.5, include_first=False, include_last=False)
    names = list(get_masks(pruned))
    convs = [n for n, m in trained_cnn.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [n.rsplit(".", 1)[0] for n in names] == convs[1:-1]


def test_no_layers_is_an_error():
    with pytest.raises(ValueError, match="no conv or linear"):
        _apply("prune.lamp", nn.Sequential(nn.ReLU()), sparsity=0.5)


def _torch_masks(model):
    return [m.weight_mask.bool() for m in model if hasattr(m, "weight_mask")]


def test_global_and_layerwise_match_torch_nn_utils_prune():
    """Reference: torch.nn.utils.prune (global_unstructured / l1_unstructured)."""
    import copy

    import torch.nn.utils.prune as tprune

    torch.manual_seed(7)
    model = _mlp(torch.randn(30, 20), torch.randn(15, 30), torch.randn(4, 15))
    ref = copy.deepcopy(model)
    tprune.global_unstructured([(m, "weight") for m in ref], pruning_method=tprune.L1Unstructured, amount=0.83)
    ours = list(get_masks(_apply("prune.global_magnitude", model, sparsity=0.83)).values())
    assert all(torch.equal(a, b) for a, b in zip(ours, _torch_masks(ref)))
    ref = copy.deepcopy(model)
    for m in ref:
        tprune.l1_unstructured(m, "weight", amount=0.6)
    ours = list(get_masks(_apply("prune.layerwise_magnitude", model, sparsity=0.6)).values())
    assert all(torch.equal(a, b) for a, b in zip(ours, _torch_masks(ref)))
