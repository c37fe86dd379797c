"""Fixed point with a trainable binary point (arXiv 2401.17544): rounding, gradients, BN, residual."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sturdynet.core.method import MethodContext
from sturdynet.core.params import from_dict
from sturdynet.data.base import Split
from sturdynet.quant import QuantBatchNorm2d, QuantConv2d
from sturdynet.quant.fixed_point import FixedPointParams, FixedPointQuant, FixedPointQuantizer


def _q(bits=4, frac=2.0, signed=True):
    q = FixedPointQuantizer(bits, signed)
    q.set_frac(frac)
    return q


def test_rounding_known_values():
    q = _q()  # step 0.25, integers [-8, 7]
    x = torch.tensor([0.1, 0.125, 0.375, -0.3, 5.0, -5.0, 1.6])
    # x*4 = [0.4, 0.5, 1.5, -1.2, 20, -20, 6.4]: half to even, saturate at 7 / -8
    assert q(x).tolist() == [0.0, 0.0, 0.5, -0.25, 1.75, -2.0, 1.5]
    q.set_frac(2.4)  # the binary point is round(frac)
    assert q(x).tolist() == [0.0, 0.0, 0.5, -0.25, 1.75, -2.0, 1.5]
    assert q.frac_bits == 2 and float(q.scale) == 0.25
    u = _q(signed=False)  # [0, 15]
    assert u(torch.tensor([-1.0, 3.0, 9.0])).tolist() == [0.0, 3.0, 3.75]


def test_gradients_by_hand():
    q = _q()
    x = torch.tensor([0.1, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0]
    # dq/ds = (round(0.4) - 0.4) + hi = -0.4 + 7; ds/dfrac = -ln2 * s
    assert float(q.frac.grad) == pytest.approx((-0.4 + 7.0) * (-math.log(2) * 0.25), rel=1e-5)
    q.frac.grad = None
    q.grad_mode = "true"
    x.grad = None
    q(x).sum().backward()
    assert x.grad.abs().sum() == 0


def test_init_frac_minimizes_error_and_decode_exact():
    torch.manual_seed(0)
    w = torch.randn(200) * 0.1
    q = FixedPointQuantizer(8)
    q.init_frac(w)
    errs = {}
    for f in range(q.frac_bits - 2, q.frac_bits + 3):
        t = _q(8, float(f))
        errs[f] = float(((t(w) - w) ** 2).sum())
    assert min(errs, key=errs.get) == q.frac_bits
    c = q.encode(w)
    assert torch.equal(q.quantize(q.decode(c)), q.quantize(w))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.shortcut = nn.Identity()

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + self.shortcut(x))


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), Block(4), Block(4),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_method_bn_and_residual_outputs_are_fixed_point():
    torch.manual_seed(0)
    model = _net()
    x = torch.rand(16, 1, 6, 6)
    ctx = MethodContext(data=SimpleNamespace(train=Split(x, torch.zeros(16, dtype=torch.long))))
    params = from_dict(FixedPointParams, {"bits": 6, "act_bits": 8, "bn": True, "residual": True})
    q = FixedPointQuant().apply(model, params, ctx).eval()
    assert isinstance(q[3].conv, QuantConv2d) and isinstance(q[3].bn, QuantBatchNorm2d)
    assert isinstance(q[1], QuantBatchNorm2d)
    # BN gamma/beta are 6-bit fixed point; block outputs are 8-bit unsigned fixed point
    bn = q[3].bn
    g = bn.weight_quantizer(bn.weight)
    assert torch.equal(g * 2.0 ** bn.weight_quantizer.frac_bits, torch.round(g * 2.0 ** bn.weight_quantizer.frac_bits))
    assert bn.storage_bits("weight") == 6 and bn.storage_bits("running_mean") is None
    with torch.no_grad():
        out = q[:5](x)
    oq = q[4].out_quantizer
    assert bool(oq.signed) is False and oq.bits == 8
    n = out * 2.0 ** oq.frac_bits
    assert torch.equal(n, torch.round(n)) and float(n.max()) <= 255
    assert ctx.log["quant.fixed_point"]["residual_blocks"] == 2


def test_method_needs_data_for_activations():
    with pytest.raises(ValueError, match="calibration data"):
        FixedPointQuant().apply(_net(), from_dict(FixedPointParams, {"bn": True}), None)
    q = FixedPointQuant().apply(_net(), from_dict(FixedPointParams, {"bits": 8}), None)
    assert isinstance(q[3].conv.weight_quantizer, FixedPointQuantizer)
