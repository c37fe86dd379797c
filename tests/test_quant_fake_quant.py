"""The fused fake-quantization node (quant.base.fake_quant_ste) used by LSQ and fixed point:
hand-computed values on tiny tensors, the same forward bits and input gradients as the first
fused node (issue 18 part 4, kept below as the reference) and the composed graph, step
gradients equal to theirs up to float rounding, the exact on-grid shortcut, and why
torch's own fake-quantization ops were not adopted."""
from __future__ import annotations

import math

import pytest
import torch

from sturdynet.quant.base import fake_quant_ste, grad_scale, outer_bounds, round_ste
from sturdynet.quant.fixed_point import FixedPointQuantizer
from sturdynet.quant.lsq import LSQQuantizer


def _composed(x, s, lo, hi):
    return round_ste(torch.clamp(x / s, lo, hi)) * s


class _FirstFused(torch.autograd.Function):
    """The first fused node (saved t and q, bool range mask in backward): the reference."""

    @staticmethod
    def forward(ctx, x, s, lo, hi):
        t = x / s
        q = torch.clamp(t, lo, hi).round_()
        ctx.save_for_backward(t, q)
        ctx.bounds, ctx.s_shape = (lo, hi), s.shape
        return q * s

    @staticmethod
    def backward(ctx, g):
        t, q = ctx.saved_tensors
        lo, hi = ctx.bounds
        inside = (t >= lo) & (t <= hi)
        gx = torch.where(inside, g, 0.0)
        gs = torch.where(inside, q - t, q).mul_(g).sum_to_size(ctx.s_shape)
        return gx, gs, None, None


def _run(fn, x0, s0, lo, hi, go, g=1.0):
    x, s = x0.clone().requires_grad_(), s0.clone().requires_grad_()
    y = fn(x, grad_scale(s, g), lo, hi)
    y.backward(go)
    return y.detach(), x.grad, s.grad


def test_hand_computed_values_and_gradients():
    # s = 0.5, range [-4, 3]; x/s = -4.8 (below), -4 (on lo), -3.8, 0.6, 1.5 (tie -> 2), 3 (on hi), 3.2 (above)
    x = torch.tensor([-2.4, -2.0, -1.9, 0.3, 0.75, 1.5, 1.6], requires_grad=True)
    s = torch.tensor([0.5], requires_grad=True)
    up = torch.tensor([1.0, 2.0, -1.0, 0.5, 1.0, 3.0, -2.0])
    y = fake_quant_ste(x, s, -4, 3)
    assert y.tolist() == [-2.0, -2.0, -2.0, 0.5, 1.0, 1.5, 1.5]
    y.backward(up)
    # dx: upstream inside the inclusive range [lo, hi], 0 where clamped
    assert x.grad.tolist() == [0.0, 2.0, -1.0, 0.5, 1.0, 3.0, 0.0]
    # ds (LSQ eq. 3): bound where clamped, round(x/s) - x/s inside
    per = [-4.0, 0.0, -4.0 + 3.8, 1.0 - 0.6, 2.0 - 1.5, 0.0, 3.0]
    assert float(s.grad) == pytest.approx(sum(u * p for u, p in zip(up.tolist(), per)), rel=1e-6)


def test_range_is_inclusive_to_the_last_float():
    lo_out, hi_out = outer_bounds(-8, 7, torch.float32)
    assert lo_out < -8 and hi_out > 7
    for dtype in (torch.float32, torch.float64):
        b = torch.tensor([-8.0, 7.0], dtype=dtype)
        below, above = torch.nextafter(b[0], b[0] - 1), torch.nextafter(b[1], b[1] + 1)
        x = torch.stack([below, b[0], b[1], above]).requires_grad_()  # s = 1: x/s = x
        s = torch.ones(1, dtype=dtype, requires_grad=True)
        fake_quant_ste(x, s, -8, 7).backward(torch.ones(4, dtype=dtype))
        assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
        assert float(s.grad) == pytest.approx(-8 + (-8 - float(below)) + 0 + 0 + 7)


@pytest.mark.parametrize("shape,s_shape,lo,hi", [((64, 8, 5, 5), (1,), -8, 7), ((16, 4, 3, 3), (16, 1, 1, 1), -8, 7),
                                                 ((6, 10), (6, 1), -8, 7), ((32, 16, 9, 9), (1,), 0, 255)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_same_bits_as_first_fused_node_and_composed_graph(shape, s_shape, lo, hi, fmt):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(*shape, generator=g) * 3
    x0.view(-1)[:5] = torch.tensor([-8.0, 7.0, 7.5, -8.5, 0.5]) * 0.4  # on and past the bounds, a tie
    s0 = torch.rand(*s_shape, generator=g) * 0.5 + 0.2
    s0.view(-1)[0] = 0.4
    go = torch.randn(*shape, generator=g)
    if len(shape) == 4:
        x0, go = x0.contiguous(memory_format=fmt), go.contiguous(memory_format=fmt)
    ref = _run(_FirstFused.apply, x0, s0, lo, hi, go, 0.3)
    comp = _run(_composed, x0, s0, lo, hi, go, 0.3)
    new = _run(fake_quant_ste, x0, s0, lo, hi, go, 0.3)
    assert torch.equal(new[0], ref[0]) and torch.equal(new[0], comp[0])  # forward bits
    assert torch.equal(new[1], ref[1])  # input gradient bits
    torch.testing.assert_close(new[1], comp[1])  # the composed graph computes (g * s) / s
    # step gradient: the three sum the same terms in other orders; each within float32
    # summation error of the float64 sum (relative to the sum of |terms|)
    terms = _step_terms(x0, s0, lo, hi, go)
    for gs in (new[2], ref[2], comp[2]):
        err = (gs.double() / 0.3 - terms.sum_to_size(s0.shape)).abs()
        assert bool((err <= 1e-6 * terms.abs().sum_to_size(s0.shape) + 1e-9).all())


def _step_terms(x0, s0, lo, hi, go):
    """The terms g * r of the step gradient, from the float32 x/s (as the node divides), in float64."""
    t = (x0 / s0).double()
    q = t.clamp(lo, hi).round()
    return torch.where((t >= lo) & (t <= hi), q - t, q) * go.double()


def test_step_gradient_of_a_large_tensor_against_float64():
    g = torch.Generator().manual_seed(2)
    x0 = (torch.randn(64, 16, 32, 32, generator=g) * 1.5).contiguous(memory_format=torch.channels_last)
    go = torch.randn(x0.shape, generator=g).contiguous(memory_format=torch.channels_last)
    s0 = torch.tensor([2.0 ** -6])
    _, _, gs = _run(fake_quant_ste, x0, s0, 0, 255, go)
    terms = _step_terms(x0, s0, 0, 255, go)
    # one float32 dot product over 1M elements: error small against the sum of |terms|
    assert abs(float(gs) - float(terms.sum())) < 1e-6 * float(terms.abs().sum())


def test_gradient_layout_mismatch_and_broadcast_gradients():
    x0 = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(3)).contiguous(memory_format=torch.channels_last)
    s0 = torch.tensor([0.3])
    for go in (torch.ones(4, 3, 5, 5), torch.ones(()).expand(4, 3, 5, 5)):  # other layout; stride-0 (from .sum())
        new, ref = _run(fake_quant_ste, x0, s0, -8, 7, go), _run(_FirstFused.apply, x0, s0, -8, 7, go)
        assert torch.equal(new[1], ref[1])
        torch.testing.assert_close(new[2], ref[2], rtol=1e-5, atol=1e-6)


def test_on_grid_input_shortcut_is_exact():
    g = torch.Generator().manual_seed(4)
    s0 = torch.tensor([2.0 ** -5])
    # relu of a signed 8-bit value on a 2^-4 grid: on the unsigned 8-bit 2^-5 grid, in range
    x0 = torch.randint(-128, 128, (8, 4, 6, 6), generator=g).float().relu() * 2.0 ** -4
    go = torch.randn(x0.shape, generator=g)
    new, ref = _run(fake_quant_ste, x0, s0, 0, 255, go), _run(_FirstFused.apply, x0, s0, 0, 255, go)
    assert torch.equal(new[0], x0) and torch.equal(new[0], ref[0])
    assert torch.equal(new[1], go) and torch.equal(new[1], ref[1])
    assert float(new[2]) == 0.0 == float(ref[2])
    x1 = x0.clone()
    x1.view(-1)[-1] = 255 * 2.0 ** -5 + 2.0 ** -5  # one element past the range: the general path
    new, ref = _run(fake_quant_ste, x1, s0, 0, 255, go), _run(_FirstFused.apply, x1, s0, 0, 255, go)
    assert torch.equal(new[1], ref[1]) and new[1].view(-1)[-1] == 0
    assert float(new[2]) == pytest.approx(float(ref[2])) and float(new[2]) == pytest.approx(255 * float(go.view(-1)[-1]))


def test_torch_learnable_fake_quant_differs_from_lsq_at_the_clip():
    """Why torch._fake_quantize_learnable_per_tensor_affine is not used: it tests the range on
    the rounded value, so x/s = 3.2 with Q_P = 3 still passes gradient; LSQ (eq. 3) clips."""
    x = torch.tensor([1.6], requires_grad=True)
    s = torch.tensor([0.5], requires_grad=True)
    torch._fake_quantize_learnable_per_tensor_affine(x, s, torch.zeros(1), -4, 3, 1.0).backward(torch.ones(1))
    x2, s2 = x.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    fake_quant_ste(x2, s2, -4, 3).backward(torch.ones(1))
    assert float(x2.grad) == 0.0 and float(s2.grad) == 3.0  # the paper's clipped case
    assert float(x.grad) == 1.0 and float(s.grad) == pytest.approx(3.0 - 3.2)  # torch's


def test_quantizers_forward_is_the_deployed_function_in_both_modes():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for q in (LSQQuantizer(4, activation=True), LSQQuantizer(8, 3, per_channel=True), FixedPointQuantizer(6)):
        q.init_step(x[:3] if getattr(q, "per_channel", False) else x) if isinstance(q, LSQQuantizer) else q.init_frac(x)
        v = x[:3] if getattr(q, "per_channel", False) else x
        ste = q(v)
        q.grad_mode = "true"
        assert torch.equal(ste, q(v))


def test_fixed_point_binary_point_gradient_by_hand():
    q = FixedPointQuantizer(4)  # [-8, 7]
    q.set_frac(1.2)  # f = 1, s = 0.5
    x = torch.tensor([0.3, 1.0, 5.0])  # x/s = 0.6, 2 (on grid), 10 (clamped)
    y = q(x)
    assert y.tolist() == [0.5, 1.0, 3.5]
    y.sum().backward()
    # dq/dfrac = dq/ds * (-ln 2) * s with dq/ds = (1 - 0.6) + 0 + 7
    assert float(q.frac.grad) == pytest.approx(7.4 * -math.log(2) * 0.5, rel=1e-6)


def test_no_grad_forward_has_the_same_bits():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 5, 5, generator=g) * 4
    for s in (torch.tensor([0.37]), torch.rand(3, 1, 1, 1, generator=g) + 0.1):
        with torch.no_grad():
            y0 = fake_quant_ste(x, s.requires_grad_(), -8, 7)
        y1 = fake_quant_ste(x.requires_grad_(), s, -8, 7)
        assert y0.grad_fn is None and y1.grad_fn is not None
        assert torch.equal(y0, y1.detach()) and torch.equal(y0, _FirstFused.apply(x, s, -8, 7).detach())
        x = x.detach()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_mixed_dtypes_promote_as_before(dtype):
    """bfloat16 / float64 inputs with a float32 step: the result dtype and bits of the first node."""
    g = torch.Generator().manual_seed(6)
    x0 = (torch.randn(2, 3, 4, 4, generator=g) * 3).to(dtype)
    s0 = torch.tensor([0.37])
    go = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float32 if dtype == torch.bfloat16 else dtype)
    new, ref = _run(fake_quant_ste, x0, s0, -8, 7, go), _run(_FirstFused.apply, x0, s0, -8, 7, go)
    assert new[0].dtype == ref[0].dtype and torch.equal(new[0], ref[0]) and torch.equal(new[1], ref[1])
    torch.testing.assert_close(new[2], ref[2])
    with torch.no_grad():
        assert torch.equal(fake_quant_ste(x0, s0, -8, 7), ref[0])


def test_fixed_point_step_node_matches_the_composed_step_bit_for_bit():
    from sturdynet.quant.base import round_ste as rste
    from sturdynet.quant.fixed_point import _Pow2Step

    for f, up in [(1.2, 0.731), (-2.6, -3.3), (4.5, 1e-3), (0.0, 7.0)]:
        a, b = torch.tensor([f], requires_grad=True), torch.tensor([f], requires_grad=True)
        sa, sb = _Pow2Step.apply(a), torch.exp2(-rste(b))
        assert torch.equal(sa, sb)
        sa.backward(torch.tensor([up]))
        sb.backward(torch.tensor([up]))
        assert torch.equal(a.grad, b.grad)
