"""Sign estimators, binary quantizers and the ReSTE schedule: known answers on hand-made tensors."""
import math

import pytest
import torch
from torch import nn

from sturdynet.quant import QuantLinear, gradient_mode
from sturdynet.quant.binary import BinaryWeightQuantizer, SignActivation, estimator_slope
from sturdynet.quant.binary.reste import ReSTEAnneal, reste_order
from sturdynet.core.storage import compression_facts

X = [-2.0, -1.2, -1.0, -0.5, -0.05, 0.0, 0.05, 0.5, 1.0, 1.2, 2.0]
S = 0.1 ** (1 / 3) / 0.1  # ReSTE secant slope, o = 3, eps = 0.1: 4.6416
P05 = (1 / 3) * 0.5 ** (-2 / 3)  # 0.52913
P12 = (1 / 3) * 1.2 ** (-2 / 3)  # 0.29518
EXPECTED = {
    "ste": [1.0] * 11,
    "clipped_ste": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0],
    "approx_sign": [0, 0, 0, 1, 1.9, 2, 1.9, 1, 0, 0, 0],
    "reste": [0, P12, 1 / 3, P05, S, S, S, P05, 1 / 3, P12, 0],
}


def _grad(estimator: str, o: float = 3.0, mode: str = "ste") -> torch.Tensor:
    q = SignActivation(estimator, o=o)
    q.grad_mode = mode
    x = torch.tensor(X, requires_grad=True)
    y = q(x)
    assert torch.equal(y, torch.sign(x.detach()))
    y.sum().backward()
    return x.grad


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_estimator_backward_known_values(name):
    torch.testing.assert_close(_grad(name), torch.tensor(EXPECTED[name], dtype=torch.float32), rtol=1e-5, atol=1e-6)


def test_hand_values_of_reste():
    assert S == pytest.approx(4.641589, rel=1e-6)
    assert P05 == pytest.approx(0.529134, rel=1e-5)
    assert P12 == pytest.approx(0.295183, rel=1e-5)


def test_reste_order_one_is_clipped_identity_up_to_t():
    g = _grad("reste", o=1.0)
    torch.testing.assert_close(g, torch.tensor([0.0] + [1.0] * 9 + [0.0]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_true_mode_gives_zero_gradient(name):
    assert torch.count_nonzero(_grad(name, mode="true")) == 0


def test_bad_estimator_and_mode():
    with pytest.raises(ValueError, match="unknown sign estimator"):
        SignActivation("nope")
    with pytest.raises(ValueError, match="o must be >= 1"):
        estimator_slope(torch.zeros(2), "reste", o=0.5)
    q = SignActivation("ste")
    q.grad_mode = "bpda"
    with pytest.raises(ValueError, match="unknown gradient mode"):
        q(torch.zeros(2))


W = [[1.0, -2.0, 3.0, 0.5], [-0.1, -0.3, 0.2, 0.2]]


def test_binary_weight_forward_is_sign_times_channel_mean():
    q = BinaryWeightQuantizer(2, "clipped_ste")
    out = q(torch.tensor(W))
    torch.testing.assert_close(out, torch.tensor([[1.625, -1.625, 1.625, 1.625], [-0.2, -0.2, 0.2, 0.2]]))
    torch.testing.assert_close(q.alpha, torch.tensor([1.625, 0.2]))


@pytest.mark.parametrize("mode,expected", [
    # ste: alpha * 1{|w|<=1} + (sum_k sign w_k) * sign(w_j) / n
    ("ste", [[2.125, -0.5, 0.5, 2.125], [0.2, 0.2, 0.2, 0.2]]),
    # true: only the exact gradient through alpha = mean|w|
    ("true", [[0.5, -0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]),
])
def test_binary_weight_gradient_known_values(mode, expected):
    q = BinaryWeightQuantizer(2, "clipped_ste")
    q.grad_mode = mode
    w = torch.tensor(W, requires_grad=True)
    q(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor(expected))


def test_export_protocol_round_trip_is_bit_exact():
    torch.manual_seed(0)
    q = BinaryWeightQuantizer(16)
    w = torch.randn(16, 8, 3, 3) * 0.07
    ref = q.quantize(w)
    codes = q.encode(w)
    assert codes.dtype == torch.int64 and set(codes.unique().tolist()) <= {0, 1}
    assert torch.equal(q.quantize(q.decode(codes)), ref)


def test_storage_counts_one_bit_per_weight_plus_alpha():
    layer = QuantLinear(8, 4, bias=False, weight_quantizer=BinaryWeightQuantizer(4))
    layer(torch.randn(2, 8))
    assert layer.storage_bits("weight") == 1
    # 32 weights at 1 bit + 4 alphas at 32 bits = 160 bits = 20 bytes
    assert compression_facts(nn.Sequential(layer))["size_bytes"] == 20


def test_gradient_mode_switches_binary_quantizers():
    layer = QuantLinear(4, 2, weight_quantizer=BinaryWeightQuantizer(2), act_quantizer=SignActivation("ste"))
    x = torch.randn(3, 4, requires_grad=True)
    with gradient_mode(layer, "true"):
        layer(x).sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    x.grad = None
    layer(x).sum().backward()
    assert torch.count_nonzero(x.grad) > 0


def test_reste_schedule_values():
    assert reste_order(0.0) == 1.0
    assert reste_order(0.5) == pytest.approx(1 + 2 * (1 - math.cos(math.pi / 4)))  # 1.585786
    assert reste_order(0.5) == pytest.approx(1.585786, abs=1e-6)
    assert reste_order(1.0) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        reste_order(1.5)


class _State:
    def __init__(self, model, step, total):
        self.model, self.step, self.total_steps, self.log = model, step, total, {}

    @property
    def progress(self):
        return self.step / self.total_steps


def test_reste_anneal_callback_sets_o_on_reste_quantizers_only():
    model = nn.Sequential(QuantLinear(4, 4, weight_quantizer=BinaryWeightQuantizer(4, "reste"),
                                      act_quantizer=SignActivation("clipped_ste")))
    cb = ReSTEAnneal()
    st = _State(model, 0, 100)
    cb.on_train_begin(st)
    st.step = 50
    cb.on_batch_begin(st)
    assert model[0].weight_quantizer.o == pytest.approx(1.585786, abs=1e-6)
    assert model[0].act_quantizer.o == 1.0
    cb.on_train_end(st)
    assert model[0].weight_quantizer.o == 3.0
    with pytest.raises(ValueError, match="no quantizer"):
        ReSTEAnneal().on_train_begin(_State(nn.Sequential(nn.Linear(2, 2)), 0, 1))


@pytest.mark.parametrize("name", ["ste", "clipped_ste", "approx_sign"])
def test_backward_shortcuts_equal_grad_times_slope(name):
    """The backward shortcuts (no slope tensor) give exactly grad * estimator_slope(x),
    including the float neighbours of +-1 for the clipped STE."""
    g = torch.Generator().manual_seed(0)
    one = torch.tensor(1.0)
    edge = torch.stack([torch.nextafter(one, one + 1), one, torch.nextafter(one, one - 1)])
    x0 = torch.cat([torch.randn(200, generator=g) * 1.5, edge, -edge, torch.zeros(1)])
    up = torch.randn(x0.shape, generator=g)
    x = x0.clone().requires_grad_()
    SignActivation(name)(x).backward(up)
    assert torch.equal(x.grad, up * estimator_slope(x0, name))
    if name == "clipped_ste":
        assert x.grad[200:206].ne(0).tolist() == [False, True, True, False, True, True]
