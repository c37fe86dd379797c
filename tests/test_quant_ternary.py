"""TTQ (arXiv 1612.01064): ternary values, scale gradients and scaled latent gradients by hand."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sturdynet.core.method import MethodContext
from sturdynet.core.params import from_dict
from sturdynet.data.base import Split
from sturdynet.quant.ternary import TernaryParams, TernaryQuant, TTQQuantizer
from sturdynet.core.storage import compression_facts


def _q():
    q = TTQQuantizer(0.05)
    with torch.no_grad():
        q.w_p.fill_(2.0)
        q.w_n.fill_(3.0)
    return q


W = [0.9, -0.5, 0.02, -0.03, 0.6, -1.0]  # max 1 -> delta 0.05: I_p = {0, 4}, I_n = {1, 5}
G = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_forward_values():
    q = _q()
    assert q(torch.tensor(W)).tolist() == [2.0, -3.0, 0.0, 0.0, 2.0, -3.0]
    assert q.ternary(torch.tensor(W)).tolist() == [1, -1, 0, 0, 1, -1]


def test_scale_and_latent_gradients():
    q = _q()
    w = torch.tensor(W, requires_grad=True)
    (q(w) * torch.tensor(G)).sum().backward()
    assert float(q.w_p.grad) == pytest.approx(1.0 + 5.0)          # sum over I_p
    assert float(q.w_n.grad) == pytest.approx(-(2.0 + 6.0))       # chain rule through -W_n
    assert w.grad.tolist() == pytest.approx([2 * 1, 3 * 2, 3, 4, 2 * 5, 3 * 6])  # W_p / 1 / W_n scaling


def test_true_mode_zero_latent_gradient():
    q = _q()
    q.grad_mode = "true"
    w = torch.tensor(W, requires_grad=True)
    (q(w) * torch.tensor(G)).sum().backward()
    assert w.grad.abs().sum() == 0
    assert float(q.w_p.grad) == pytest.approx(6.0)


def test_encode_decode_exact():
    torch.manual_seed(0)
    q = _q()
    w = torch.randn(4, 3, 3, 3)
    c = q.encode(w)
    assert set(c.unique().tolist()) <= {0, 1, 2}
    assert torch.equal(q.quantize(q.decode(c)), q.quantize(w))
    with pytest.raises(ValueError, match="threshold"):
        TTQQuantizer(1.0)


def test_method_normalizes_initializes_and_recalibrates_bn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 2 * 2, 3))
    x = torch.rand(16, 1, 6, 6)
    ctx = MethodContext(data=SimpleNamespace(train=Split(x, torch.zeros(16, dtype=torch.long))))
    q = TernaryQuant().apply(model, from_dict(TernaryParams, {}), ctx)
    layer = q[1]
    assert float(layer.weight.abs().max()) == pytest.approx(1.0)
    t = layer.weight_quantizer.ternary(layer.weight)
    assert float(layer.weight_quantizer.w_p) == pytest.approx(float(layer.weight[t == 1].mean()))
    assert float(layer.weight_quantizer.w_n) == pytest.approx(float(-layer.weight[t == -1].mean()))
    with torch.no_grad():
        h = q[1](q[0](x))
    assert q[2].running_mean.tolist() == pytest.approx(h.mean((0, 2, 3)).tolist(), abs=1e-5)
    assert compression_facts(q)["bits"] == 2
