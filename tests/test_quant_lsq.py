"""LSQ (arXiv 1902.08153): step-size gradient vs the paper's formula computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from sturdynet.quant.lsq import LSQQuantizer


def _q(bits=3, **kw):
    q = LSQQuantizer(bits, **kw)
    with torch.no_grad():
        q.step.fill_(0.5)
    return q


def test_step_gradient_matches_paper_by_hand():
    # bits 3 signed: Q_N = 4, Q_P = 3; s = 0.5; v/s = [-4.2, -0.6, 0.8, 2.52, 10]
    q = _q()
    v = torch.tensor([-2.1, -0.3, 0.4, 1.26, 5.0], requires_grad=True)
    out = q(v)
    assert out.tolist() == pytest.approx([-2.0, -0.5, 0.5, 1.5, 1.5])
    out.sum().backward()
    # d v_hat / d s: -Q_N below; -v/s + round(v/s) inside; Q_P above
    per = [-4.0, 0.6 - 1.0, -0.8 + 1.0, -2.52 + 3.0, 3.0]
    g = 1 / math.sqrt(5 * 3)
    assert float(q.step.grad) == pytest.approx(sum(per) * g, rel=1e-5)
    assert v.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_upstream_gradient_weights_each_term():
    q = _q()
    v = torch.tensor([-2.1, 0.4, 5.0])
    up = torch.tensor([2.0, -1.0, 0.5])
    (q(v) * up).sum().backward()
    g = 1 / math.sqrt(3 * 3)
    assert float(q.step.grad) == pytest.approx((2.0 * -4.0 - 1.0 * 0.2 + 0.5 * 3.0) * g, rel=1e-5)


def test_unsigned_range_and_activation_gradient_scale():
    q = _q(bits=2, signed=False, activation=True)  # Q_N = 0, Q_P = 3
    x = torch.tensor([[-1.0, 0.7], [1.2, 9.0]])  # two samples of 2 features
    out = q(x)
    assert out.tolist() == [[0.0, 0.5], [1.0, 1.5]]
    out.sum().backward()
    per = [0.0, -1.4 + 1.0, -2.4 + 2.0, 3.0]
    assert float(q.step.grad) == pytest.approx(sum(per) / math.sqrt(2 * 3), rel=1e-5)


def test_per_channel_gradient_scale_uses_channel_size():
    q = LSQQuantizer(3, channels=2, per_channel=True)
    w = torch.tensor([[0.3, -0.2, 0.1], [1.0, 2.0, -3.0]])
    q.init_step(w)
    qp = 3
    assert q.step.tolist() == pytest.approx([2 * 0.2 / math.sqrt(qp), 2 * 2.0 / math.sqrt(qp)])
    assert q.grad_scale_factor(w) == pytest.approx(1 / math.sqrt(3 * qp))


def test_init_is_paper_formula():
    q = LSQQuantizer(4)
    v = torch.tensor([-1.0, 0.5, 2.5, -4.0])
    q.init_step(v)
    assert float(q.step) == pytest.approx(2 * 2.0 / math.sqrt(7))


def test_true_mode_same_forward_zero_input_gradient():
    torch.manual_seed(0)
    q = LSQQuantizer(4)
    v = torch.randn(50)
    q.init_step(v)
    x = v.clone().requires_grad_(True)
    ste = q(x)
    q.grad_mode = "true"
    x2 = v.clone().requires_grad_(True)
    true = q(x2)
    assert torch.equal(ste, true)  # bit-identical forward in both modes
    true.sum().backward()
    assert x2.grad.abs().sum() == 0
    q.step.grad = None


def test_encode_decode_exact_and_bad_args():
    torch.manual_seed(1)
    w = torch.randn(6, 10)
    for bits in range(2, 9):
        q = LSQQuantizer(bits, 6, per_channel=True)
        q.init_step(w)
        c = q.encode(w)
        assert 0 <= int(c.min()) and int(c.max()) < 2 ** bits
        assert torch.equal(q.quantize(q.decode(c)), q.quantize(w))
    with pytest.raises(ValueError, match="per-channel"):
        LSQQuantizer(4, 3, per_channel=True, activation=True)
    with pytest.raises(ValueError, match="bits"):
        LSQQuantizer(17)
