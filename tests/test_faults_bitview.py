"""Bit-level weight view: deploy, exact round trips, single-bit known answers, Hamming distance."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sturdynet.faults import BitView, StoredWeights, ViewParams, deploy, hamming_distance
from sturdynet.faults.common import sample_positions
from sturdynet.core.params import from_dict
from sturdynet.core.registry import METHODS


def quantize(model: nn.Module, bits: int) -> nn.Module:
    params = from_dict(METHODS.params("quant.uniform"), {"bits": bits})
    return METHODS.get("quant.uniform")().apply(model, params, None)


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 2))


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_int_view_round_trips_exactly(bits):
    model = deploy(_tiny(), ViewParams(bits=bits))
    view = BitView(model)
    for i, s in enumerate(view.sites):
        assert s.kind == "int" and s.bits == bits
        w = s.module.weight.detach().clone()
        words = view.words(i)
        assert int(words.min()) >= 0 and int(words.max()) < 2 ** bits
        view.write(i, words)
        assert torch.equal(s.module.weight.detach(), w)  # decode(encode(w)) == w, bit for bit
        assert torch.equal(view.words(i), words)
        q = view.integers(i)
        assert int(q.abs().max()) == 2 ** (bits - 1) - 1  # max|W| maps to the largest integer


@pytest.mark.parametrize("bits", [4, 8])
def test_flipping_bit_i_changes_integer_by_two_to_the_i(bits):
    model = deploy(_tiny(1), ViewParams(bits=bits))
    view = BitView(model)
    q0 = view.integers(0).clone()
    w0 = view.sites[0].module.weight.detach().clone()
    for e in range(q0.numel()):
        for b in range(bits):
            view.flip(0, torch.tensor([e]), torch.tensor([b]))
            q = view.integers(0)
            was_set = (int(q0[e]) >> b) & 1 if b < bits - 1 else int(q0[e] < 0)
            step = 2 ** b if b < bits - 1 else -(2 ** (bits - 1))
            expect = int(q0[e]) + (-step if was_set else step)
            assert int(q[e]) == expect, (e, b)
            others = torch.ones_like(q, dtype=torch.bool)
            others[e] = False
            assert torch.equal(q[others], q0[others])  # everything else untouched
            view.flip(0, torch.tensor([e]), torch.tensor([b]))  # and back
    assert torch.equal(view.sites[0].module.weight.detach(), w0)


def test_sign_bit_of_zero_gives_most_negative_integer():
    model = deploy(_tiny(), ViewParams(bits=8))
    view = BitView(model)
    site = view.sites[0]
    with torch.no_grad():
        site.module.weight.data.view(-1)[0] = 0.0
    view.flip(0, torch.tensor([0]), torch.tensor([7]))
    assert int(view.integers(0)[0]) == -128  # used as stored, not re-clamped to -127
    scale = float(site.module.weight_quantizer.scale.reshape(-1)[0])
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = 1.0
    out = nn.functional.conv2d(x, site.module.weight[:1].detach(), None)
    assert float(out) == pytest.approx(-128 * scale)


def test_float32_exponent_msb_known_answers():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.5, -2.0, 0.0]]))
    model = deploy(nn.Sequential(lin), ViewParams(float_layers="float32"))
    view = BitView(model)
    assert view.sites[0].kind == "float32" and view.total_bits == 4 * 32
    view.flip(0, torch.tensor([0, 1, 2, 3]), torch.tensor([30, 30, 30, 30]))
    w = model[0].weight.detach().reshape(-1)
    assert math.isinf(float(w[0])) and float(w[0]) > 0  # 0x3F800000 -> 0x7F800000
    assert float(w[1]) == 2.0 ** 127                    # 0x3F000000 -> 0x7F000000
    assert float(w[2]) == 0.0 and math.copysign(1.0, float(w[2])) < 0  # 0xC0000000 -> 0x80000000 = -0.0
    assert float(w[3]) == 2.0                            # 0x00000000 -> 0x40000000


def test_float32_sign_and_mantissa_bits():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.5, 3.0]]))
    model = deploy(nn.Sequential(lin), ViewParams(float_layers="float32"))
    view = BitView(model)
    view.flip(0, torch.tensor([0, 1]), torch.tensor([31, 22]))
    w = model[0].weight.detach().reshape(-1)
    assert float(w[0]) == -1.5   # sign bit
    assert float(w[1]) == 2.0    # 3.0 = 1.1b * 2^1, clearing mantissa MSB gives 2.0


def test_float16_view_rounds_and_flips():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.1]]))
    model = deploy(nn.Sequential(lin), ViewParams(float_layers="float16"))
    view = BitView(model)
    assert view.sites[0].kind == "float16" and view.sites[0].bits == 16
    assert float(model[0].weight[0, 1].detach()) == float(torch.tensor(0.1).half())
    view.flip(0, torch.tensor([0]), torch.tensor([14]))  # exponent MSB of half: 0x3C00 -> 0x7C00 = inf
    assert math.isinf(float(model[0].weight[0, 0].detach()))


def test_quantized_layers_keep_their_deployed_integers(trained_cnn):
    q = quantize(trained_cnn, 4)
    dep = deploy(q, ViewParams(bits=8))
    view = BitView(dep)
    kinds = [(s.kind, s.bits) for s in view.sites]
    assert kinds[0] == ("int", 8) and kinds[-1] == ("int", 8)  # float first/last layers at 8 bits
    assert all(k == ("int", 4) for k in kinds[1:-1])
    x = torch.rand(16, 1, 8, 8)
    # the deployed 4-bit layers compute exactly what the quantized model computes
    skip = deploy(q, ViewParams(float_layers="skip"))
    assert torch.allclose(skip(x), q(x), atol=1e-6)
    assert len(BitView(skip, "skip").sites) == len(kinds) - 2


def test_deploy_never_changes_the_callers_model_and_is_idempotent():
    m = _tiny()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    d1 = deploy(m)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    assert isinstance(d1[0].weight_quantizer, StoredWeights)
    d2 = deploy(d1)
    assert hamming_distance(d1, d2) == 0
    for a, b in zip(d1.parameters(), d2.parameters()):
        assert torch.equal(a, b)


def test_hamming_distance_counts_flipped_bits():
    d = deploy(_tiny())
    e = deploy(d)
    view = BitView(e)
    view.flip(0, torch.tensor([0, 0, 5]), torch.tensor([1, 3, 7]))
    view.flip(1, torch.tensor([2]), torch.tensor([0]))
    assert hamming_distance(d, e) == 4
    view.flip(0, torch.tensor([0]), torch.tensor([1]))  # undo one
    assert hamming_distance(d, e) == 3


def test_global_positions_map_to_sites():
    view = BitView(deploy(_tiny()))
    n0 = view.sites[0].nbits
    groups = view.locate(torch.tensor([0, 9, n0, n0 + 17]))
    assert [(i, e.tolist(), b.tolist()) for i, e, b in groups] == [(0, [0, 1], [0, 1]), (1, [0, 2], [0, 1])]
    with pytest.raises(ValueError):
        view.locate(torch.tensor([view.total_bits]))


def test_bad_input_is_rejected(trained_cnn):
    with pytest.raises(ValueError, match="deployed"):
        BitView(quantize(trained_cnn, 4))
    view = BitView(deploy(_tiny()))
    with pytest.raises(ValueError):
        view.flip(0, torch.tensor([0]), torch.tensor([8]))
    with pytest.raises(ValueError):
        view.flip(0, torch.tensor([10 ** 6]), torch.tensor([0]))
    with pytest.raises(ValueError):
        deploy(_tiny(), ViewParams(float_layers="bogus"))  # type: ignore[arg-type]


def test_sample_positions_distinct_and_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = sample_positions(10 ** 9, 5000, g1), sample_positions(10 ** 9, 5000, g2)
    assert torch.equal(a, b) and a.unique().numel() == 5000
    c = sample_positions(100, 90, torch.Generator().manual_seed(0))
    assert c.unique().numel() == 90 and int(c.max()) < 100
    with pytest.raises(ValueError):
        sample_positions(10, 11, torch.Generator())


@pytest.mark.parametrize("name,params,kind", [
    ("quant.uniform", {"bits": 4}, ("int", 4)),
    ("quant.uniform", {"bits": 4, "mode": "lsq"}, ("int", 4)),
    ("quant.uniform", {"bits": 8, "act_bits": 8}, ("int", 8)),
    ("quant.fixed_point", {}, ("int", 8)),
    ("binarize", {}, ("binary", 1)),
])
def test_deploy_reads_every_quantizer_exactly(digits, trained_cnn, name, params, kind):
    from sturdynet.train import TrainConfig
    from sturdynet.train.context import training_context

    if name not in METHODS:
        pytest.skip(f"{name} not available")
    ctx = training_context(digits, TrainConfig(epochs=1), seed=0)
    q = METHODS.get(name)().apply(trained_cnn, from_dict(METHODS.params(name), params), ctx).eval()
    dep = deploy(q, ViewParams(float_layers="skip"))
    view = BitView(dep, "skip")
    assert view.sites and all((s.kind, s.bits) == kind for s in view.sites)
    x = digits.test.x[:64]
    with torch.no_grad():
        assert torch.equal(dep(x), q(x))  # the deployed copy computes exactly what the model computes


def _ttq_linear(latent, w_p: float = 0.75, w_n: float = 0.5) -> nn.Module:
    from sturdynet.quant.layers import QuantLinear
    from sturdynet.quant.ternary import TTQQuantizer

    q = TTQQuantizer(0.05)
    lin = QuantLinear(len(latent), 1, bias=False, weight_quantizer=q)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([latent]))
        q.w_p.fill_(w_p)
        q.w_n.fill_(w_n)
    return deploy(nn.Sequential(lin))


# (code, bit) -> value after the flip, with W_p = 0.75, W_n = 0.5; code 10 = -2 decodes to -2 W_n
TERNARY_FLIPS = {(1, 0): 0.0, (1, 1): -0.5, (0, 0): 0.75, (0, 1): -1.0,
                 (-1, 0): -1.0, (-1, 1): 0.75, (-2, 0): -0.5, (-2, 1): 0.0}


def test_ternary_view_single_bit_flips_known_answers():
    dep = _ttq_linear([1.0, 0.0, -1.0, -1.0])
    view = BitView(dep)
    assert [(s.kind, s.bits, s.numel) for s in view.sites] == [("ternary", 2, 4)] and view.total_bits == 8
    view.flip(0, torch.tensor([3]), torch.tensor([0]))  # 11 -> 10: the fourth weight holds the extra code
    assert view.integers(0).tolist() == [1, 0, -1, -2]
    assert view.words(0).tolist() == [0b01, 0b00, 0b11, 0b10]
    w0 = dep[0].weight.detach().clone()
    assert w0.reshape(-1).tolist() == [0.75, 0.0, -0.5, -1.0]
    ref = deploy(dep)
    for e, code in enumerate([1, 0, -1, -2]):
        for b in range(2):
            view.flip(0, torch.tensor([e]), torch.tensor([b]))
            w = dep[0].weight.detach().reshape(-1)
            assert float(w[e]) == TERNARY_FLIPS[(code, b)], (code, b)
            assert torch.equal(torch.cat([w[:e], w[e + 1:]]), torch.cat([w0.reshape(-1)[:e], w0.reshape(-1)[e + 1:]]))
            assert hamming_distance(ref, dep) == 1
            view.flip(0, torch.tensor([e]), torch.tensor([b]))
    assert torch.equal(dep[0].weight.detach(), w0)


def test_ternary_bit_steps_are_the_exact_flip_changes():
    dep = _ttq_linear([1.0, 0.0, -1.0, -1.0])
    view = BitView(dep)
    view.flip(0, torch.tensor([3]), torch.tensor([0]))
    steps = view.bit_steps(0, torch.arange(4))
    words = view.words(0)
    for b in range(2):
        hi, lo = view.decode(0, words | (1 << b)).reshape(-1), view.decode(0, words & ~(1 << b)).reshape(-1)
        assert torch.equal(steps[:, b], (hi - lo).double())


def test_ternary_scales_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        _ttq_linear([1.0, -1.0], w_n=-0.5)


def test_ternary_model_deploys_exactly_and_takes_random_flips(digits, trained_cnn):
    from sturdynet.core.method import MethodContext
    from sturdynet.faults import RandomFlips

    q = METHODS.get("quant.ternary")().apply(trained_cnn, from_dict(METHODS.params("quant.ternary"), {}),
                                            MethodContext(data=digits, seed=0)).eval()
    dep = deploy(q, ViewParams(float_layers="skip"))
    view = BitView(dep, "skip")
    assert view.sites and all((s.kind, s.bits) == ("ternary", 2) for s in view.sites)
    x = digits.test.x[:64]
    with torch.no_grad():
        assert torch.equal(dep(x), q(x))  # the deployed copy computes exactly what the TTQ model computes
    faulty, record = RandomFlips(flips=20, float_layers="skip").inject(q, torch.Generator().manual_seed(0))
    assert hamming_distance(dep, faulty, ViewParams(float_layers="skip")) == 20
