"""Uniform k-bit PTQ quantizer and the quant.uniform method (known answers on hand-made tensors)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sturdynet.core.method import MethodContext
from sturdynet.core.params import ConfigError, from_dict
from sturdynet.data.base import Split
from sturdynet.quant import QuantConv2d, QuantLinear
from sturdynet.quant.lsq import LSQQuantizer
from sturdynet.quant.uniform import UniformQuantizer, clip_value
from sturdynet.quant.uniform_method import UniformParams, UniformQuant
from sturdynet.core.storage import compression_facts


def test_signed_minmax_known_values():
    q = UniformQuantizer(3)  # qmax = 3
    x = torch.tensor([-1.0, -0.4, 0.1, 0.26, 0.9, 3.0])
    q.calibrate(x)
    assert float(q.scale) == pytest.approx(1.0)
    assert q.quantize(x).tolist() == [-1.0, -0.0, 0.0, 0.0, 1.0, 3.0]
    assert q.integers(torch.tensor([-7.0, 7.0])).tolist() == [-3.0, 3.0]  # narrow symmetric range


def test_unsigned_range_and_step():
    q = UniformQuantizer(2, signed=False)  # [0, 3]
    q.set_clip(torch.tensor(1.5))
    assert float(q.scale) == pytest.approx(0.5)
    assert q.quantize(torch.tensor([-1.0, 0.2, 0.3, 1.4, 9.0])).tolist() == [0.0, 0.0, 0.5, 1.5, 1.5]


def test_per_channel_and_percentile_calibration():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    q = UniformQuantizer(4, channels=2, per_channel=True)
    q.calibrate(w)
    assert q.scale.tolist() == pytest.approx([2 / 7, 0.5 / 7])
    v = torch.arange(1, 101, dtype=torch.float32)  # |v| = 1..100
    assert float(clip_value(v, False, True, "percentile", 90.0)) == 90.0
    assert float(clip_value(v, False, True, "minmax")) == 100.0


def test_clipped_ste_gradient_and_true_mode():
    q = UniformQuantizer(3)
    q.set_clip(torch.tensor(3.0))  # range [-3, 3]
    x = torch.tensor([-4.0, -1.2, 0.4, 2.6, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    x.grad = None
    q.grad_mode = "true"
    q(x).sum().backward()
    assert x.grad.abs().sum() == 0


def test_encode_decode_round_trip_is_exact():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3)
    for bits in range(2, 9):
        q = UniformQuantizer(bits, 8, per_channel=True)
        q.calibrate(w)
        codes = q.encode(w)
        assert int(codes.min()) >= 0 and int(codes.max()) < 2 ** bits
        assert torch.equal(q.quantize(q.decode(codes)), q.quantize(w))


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        UniformQuantizer(1)
    with pytest.raises(ValueError, match="calibration"):
        clip_value(torch.ones(3), False, True, "mean")
    with pytest.raises(ConfigError, match="bits"):
        from_dict(UniformParams, {"bits": 9})
    with pytest.raises(ConfigError, match="mode"):
        from_dict(UniformParams, {"mode": "qat"})


class TwoPath(nn.Module):
    """conv -> relu -> conv (unsigned input) and conv -> conv (signed input) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(1, 4, 3, padding=1)
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)  # input post-ReLU
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)  # input signed
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.c1(torch.relu(self.c0(x)))
        return self.fc(self.c2(h).mean((2, 3)))


def _ctx(n=32):
    g = torch.Generator().manual_seed(0)
    return MethodContext(data=SimpleNamespace(train=Split(torch.rand(n, 1, 6, 6, generator=g),
                                                            torch.zeros(n, dtype=torch.long))))


@pytest.mark.parametrize("mode", ["ptq", "lsq"])
def test_signedness_rule_and_first_last_kept_float(mode):
    torch.manual_seed(0)
    model = TwoPath()
    params = from_dict(UniformParams, {"bits": 4, "act_bits": 4, "mode": mode})
    ctx = _ctx()
    q = UniformQuant().apply(model, params, ctx)
    assert type(q.c0) is nn.Conv2d and type(q.fc) is nn.Linear  # first and last stay float
    assert isinstance(q.c1, QuantConv2d) and isinstance(q.c2, QuantConv2d)
    assert bool(q.c1.act_quantizer.signed) is False and bool(q.c2.act_quantizer.signed) is True
    assert ctx.log["quant.uniform"]["unsigned_act_layers"] == 1
    assert not isinstance(model.c1, QuantConv2d)  # the input model is untouched
    if mode == "lsq":
        assert isinstance(q.c1.weight_quantizer, LSQQuantizer)
        assert any(n.endswith("step") for n, _ in q.named_parameters())


def test_ptq_activation_scale_from_calibration_batch():
    torch.manual_seed(0)
    model = TwoPath()
    params = from_dict(UniformParams, {"bits": 8, "act_bits": 8})
    ctx = _ctx()
    q = UniformQuant().apply(model, params, ctx)
    with torch.no_grad():
        h = torch.relu(model.c0(ctx.data.train.x))
    assert float(q.c1.act_quantizer.scale) == pytest.approx(float(h.max()) / 255, rel=1e-5)


def test_activations_need_data_and_weights_only_do_not():
    params = from_dict(UniformParams, {"bits": 4, "act_bits": 4})
    with pytest.raises(ValueError, match="calibration data"):
        UniformQuant().apply(TwoPath(), params, None)
    q = UniformQuant().apply(TwoPath(), from_dict(UniformParams, {"bits": 4}), None)
    assert q.c1.act_quantizer is None


def test_storage_counts_bits_and_scales():
    torch.manual_seed(0)
    model = TwoPath()
    q = UniformQuant().apply(model, from_dict(UniformParams, {"bits": 4, "quantize_first": True,
                                                              "quantize_last": True}), None)
    assert all(isinstance(m, (QuantConv2d, QuantLinear)) for m in (q.c0, q.c1, q.c2, q.fc))
    weights = sum(m.weight.numel() for m in (q.c0, q.c1, q.c2, q.fc))
    biases = sum(m.bias.numel() for m in (q.c0, q.c1, q.c2, q.fc))
    scales = 4 + 4 + 4 + 3
    bits = weights * 4 + biases * 32 + scales * 32 + 4 * 1  # + one 1-bit 'signed' flag per quantizer
    assert compression_facts(q)["size_bytes"] == (bits + 7) // 8
    assert compression_facts(q)["bits"] == 4
