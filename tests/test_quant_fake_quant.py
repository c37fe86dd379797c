"""The fused fake-quantization node (quant.base.fake_quant_ste) against the composed graph it
replaces in LSQ and fixed point: the same forward bits, the same gradients up to rounding."""
from __future__ import annotations

import pytest
import torch

from sturdynet.quant.base import fake_quant_ste, grad_scale, round_ste
from sturdynet.quant.fixed_point import FixedPointQuantizer
from sturdynet.quant.lsq import LSQQuantizer


def _composed(x, s, lo, hi):
    return round_ste(torch.clamp(x / s, lo, hi)) * s


@pytest.mark.parametrize("shape,s_shape", [((64, 8, 5, 5), (1,)), ((16, 4, 3, 3), (16, 1, 1, 1)), ((6, 10), (6, 1))])
def test_fused_matches_composed(shape, s_shape):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(*shape, generator=g) * 3
    x0.view(-1)[:5] = torch.tensor([-8.0, 7.0, 7.5, -8.5, 0.5]) * 0.4  # on and past the bounds, a tie
    s0 = torch.rand(*s_shape, generator=g) * 0.5 + 0.2
    s0.view(-1)[0] = 0.4
    go = torch.randn(*shape, generator=g)
    outs = []
    for fn in (_composed, fake_quant_ste):
        x, s = x0.clone().requires_grad_(), s0.clone().requires_grad_()
        y = fn(x, grad_scale(s, 0.3), -8, 7)
        y.backward(go)
        outs.append((y.detach(), x.grad, s.grad))
    (y1, gx1, gs1), (y2, gx2, gs2) = outs
    assert torch.equal(y1, y2)
    assert torch.equal(gx1 == 0, gx2 == 0)  # the same straight-through mask
    torch.testing.assert_close(gx1, gx2)  # the composed graph computes (g * s) / s, the fused one g
    torch.testing.assert_close(gs1, gs2, rtol=1e-5, atol=1e-6)


def test_quantizers_forward_is_the_deployed_function_in_both_modes():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for q in (LSQQuantizer(4, activation=True), LSQQuantizer(8, 3, per_channel=True), FixedPointQuantizer(6)):
        q.init_step(x[:3] if getattr(q, "per_channel", False) else x) if isinstance(q, LSQQuantizer) else q.init_frac(x)
        v = x[:3] if getattr(q, "per_channel", False) else x
        ste = q(v)
        q.grad_mode = "true"
        assert torch.equal(ste, q(v))
