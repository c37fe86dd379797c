"""Fault defenses: FT-ClipAct clipped ReLUs and the piece-wise clustering regularizer."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sturdynet.core.method import MethodContext
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.faults import BitErrors
from sturdynet.defenses.clipact import ClippedReLU
from sturdynet.defenses.clustering import PiecewiseClustering
from sturdynet.defenses.clipact import auc, profile_max, replace_relus
from sturdynet.defenses.clustering import ClusteringParams, cluster_terms, clustering_penalty
from sturdynet.faults.common import accuracy
from sturdynet.core.registry import METHODS
from sturdynet.train import TrainConfig, fit


def test_clipped_relu_known_answer():
    act = ClippedReLU(2.0)
    x = torch.tensor([-1.0, 0.0, 0.5, 2.0, 3.0, float("inf"), float("nan")])
    assert act(x).tolist() == [0.0, 0.0, 0.5, 2.0, 0.0, 0.0, 0.0]


def test_replace_and_profile():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 3), nn.ReLU()))
    x = torch.randn(32, 4)
    ref = m(x)
    layers = replace_relus(m)
    assert [n for n, _ in layers] == ["1", "2.1"]
    assert torch.equal(m(x), ref)  # threshold inf: plain ReLU
    from sturdynet.data.base import Split
    acts = profile_max(m, Split(x.view(32, 4, 1, 1).flatten(1), torch.zeros(32, dtype=torch.long)))
    assert acts["1"] == pytest.approx(float(torch.relu(m[0](x)).max().detach()))
    assert acts["2.1"] == pytest.approx(float(ref.detach().max()))
    with pytest.raises(ValueError, match="no nn.ReLU"):
        replace_relus(nn.Sequential(nn.Linear(2, 2)))


def test_auc_trapezoid():
    assert auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert auc([1.0, 0.0]) == pytest.approx(0.5)
    assert auc([0.8]) == pytest.approx(0.8)


def test_clipact_helps_under_float32_faults(digits, trained_cnn):
    p = from_dict(METHODS.params("faults.clipact"),
                  {"rates": [1e-4, 3e-4], "trials": 2, "iterations": 2, "min_iterations": 1, "samples": 144})
    ctx = MethodContext(data=digits, seed=0)
    clipped = METHODS.get("faults.clipact")().apply(trained_cnn, p, ctx)
    log = ctx.log["clipact"]
    assert set(log["thresholds"]) == {n for n, m in clipped.named_modules() if isinstance(m, ClippedReLU)}
    assert all(0 <= log["thresholds"][n] <= log["act_max"][n] for n in log["thresholds"])
    test = digits.test
    assert accuracy(clipped, test) >= accuracy(trained_cnn, test) - 0.03
    base_acc, clip_acc = [], []
    for t in range(4):  # fresh seeds, unseen by the search
        fm = BitErrors(2e-4, float_layers="float32")
        base_acc.append(accuracy(fm.inject(trained_cnn, torch.Generator().manual_seed(100 + t))[0], test))
        clip_acc.append(accuracy(fm.inject(clipped, torch.Generator().manual_seed(100 + t))[0], test))
    assert sum(clip_acc) / 4 > sum(base_acc) / 4 + 0.05
    # the structure is rebuilt by prepare, thresholds come back from the state_dict
    rebuilt = METHODS.get("faults.clipact")().prepare(trained_cnn, p)
    rebuilt.load_state_dict(clipped.state_dict())
    x = test.x[:32]
    assert torch.equal(rebuilt.eval()(x), clipped.eval()(x))


def test_cluster_terms_known_answer_and_gradient():
    w = torch.tensor([1.0, 3.0, -2.0, -4.0, 0.0])
    pen, g = cluster_terms(w)
    assert float(pen) == pytest.approx(4.0)
    assert g.tolist() == [-2.0, 2.0, 2.0, -2.0, 0.0]
    v = torch.randn(50, dtype=torch.float64, requires_grad=True)
    pos, neg = v[v > 0], v[v < 0]
    ref = ((pos - pos.mean()) ** 2).sum() + ((neg - neg.mean()) ** 2).sum()
    ref.backward()
    assert torch.allclose(cluster_terms(v)[1], v.grad)


def test_clustering_callback_tightens_clusters(digits, trained_cnn):
    cfg = TrainConfig(epochs=2, lr=0.005, batch_size=64)
    plain, clustered = copy.deepcopy(trained_cnn), copy.deepcopy(trained_cnn)
    fit(plain, digits, cfg, seed=0)
    cb = Component("piecewise_clustering", ClusteringParams(strength=0.5))
    hist = fit(clustered, digits, TrainConfig(epochs=2, lr=0.005, batch_size=64, callbacks=(cb,)), seed=0)
    assert "clustering_penalty" in hist[-1]
    assert float(clustering_penalty(clustered)) < 0.7 * float(clustering_penalty(plain))
    assert accuracy(clustered, digits.test) > 0.85
    with pytest.raises(ValueError):
        PiecewiseClustering(0.0)


def test_clustering_method(digits, trained_cnn):
    p = from_dict(METHODS.params("faults.clustering"), {"epochs": 1, "strength": 0.5})
    with pytest.raises(TypeError, match="faults.clustering trains the network: its ctx argument"):
        METHODS.get("faults.clustering")().apply(trained_cnn, p, None)
    train = TrainConfig(epochs=3, lr=0.05, batch_size=64)
    ctx = training_context(digits, train, seed=0)
    before = [p_.clone() for p_ in trained_cnn.parameters()]
    out = METHODS.get("faults.clustering")().apply(trained_cnn, p, ctx)
    assert all(torch.equal(a, b) for a, b in zip(before, trained_cnn.parameters()))
    log = ctx.log["clustering"]
    assert log["penalty_after"] < log["penalty_before"] and not math.isnan(log["penalty_after"])
    assert accuracy(out, digits.test) > 0.85
