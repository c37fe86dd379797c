"""Quantized layers: drop-in conversion, deployed forward, switchable gradient estimator."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sturdynet.quant import QuantConv2d, QuantLinear, convert, gradient_mode, has_estimators
from sturdynet.quant.lsq import LSQQuantizer
from sturdynet.quant.uniform import UniformQuantizer


def _model(act=True):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 2 * 2, 8), nn.ReLU(), nn.Linear(8, 3))

    def mw(layer):
        q = UniformQuantizer(4, layer.weight.shape[0], per_channel=True)
        q.calibrate(layer.weight)
        return q

    def ma(layer):
        q = LSQQuantizer(4, signed=False, activation=True)
        q.set_mean_abs(torch.tensor(0.3))
        return q

    return convert(m, mw, ma if act else None)


def test_convert_keeps_first_and_last_float_and_subclasses():
    m = _model()
    assert type(m[0]) is nn.Conv2d and type(m[7]) is nn.Linear
    assert isinstance(m[2], QuantConv2d) and isinstance(m[2], nn.Conv2d)
    assert isinstance(m[5], QuantLinear) and isinstance(m[5], nn.Linear)
    assert m[2].storage_bits("weight") == 4 and m[2].storage_bits("bias") is None
    assert m[2].quantizer_for("weight") is m[2].weight_quantizer
    assert has_estimators(m)


def test_forward_is_deployed_arithmetic():
    m = _model(act=False)
    x = torch.rand(5, 4, 4, 4)
    layer = m[2]
    ref = nn.functional.conv2d(x, layer.weight_quantizer.quantize(layer.weight), layer.bias)
    assert torch.equal(layer(x), ref)


def test_gradient_mode_switch():
    m = _model()
    x = torch.rand(3, 1, 6, 6)
    outs = {}
    grads = {}
    for mode in ("ste", "true"):
        xi = x.clone().requires_grad_(True)
        with gradient_mode(m, mode):
            out = m(xi)
            out.sum().backward()
        outs[mode], grads[mode] = out.detach(), xi.grad
    assert torch.equal(outs["ste"], outs["true"])  # same forward
    assert grads["ste"].abs().sum() > 0            # straight-through passes
    assert grads["true"].abs().sum() == 0          # rounding of the activations blocks it
    assert all(q.grad_mode == "ste" for q in m.modules() if hasattr(q, "grad_mode"))  # restored
    with pytest.raises(ValueError, match="gradient mode"):
        with gradient_mode(m, "bpda"):
            pass


def test_converted_layer_shares_parameters_and_masks():
    lin = nn.Linear(4, 3)
    lin.register_buffer("weight_mask", torch.ones(3, 4, dtype=torch.bool))
    seq = nn.Sequential(nn.Linear(4, 4), lin, nn.Linear(3, 2))
    w = lin.weight
    convert(seq, lambda layer: UniformQuantizer(8, 3, True))
    assert seq[1].weight is w and "weight_mask" in seq[1]._buffers


@pytest.mark.parametrize("raw", [
    {"method": "quant.uniform", "bits": 4, "act_bits": 4, "mode": "lsq"},
    {"method": "quant.uniform", "bits": 6, "act_bits": 8, "calibration": "percentile"},
    {"method": "quant.ternary"},
    {"method": "quant.fixed_point", "bits": 6, "act_bits": 8, "bn": True, "residual": True},
])
def test_checkpoint_round_trip_rebuilds_structure(tmp_path, digits, raw):
    """prepare() rebuilds every quantizer (and hook), so a saved variant reloads exactly."""
    from sturdynet.core.method import MethodContext, run_steps
    from sturdynet.core.params import Component, component
    from sturdynet.models import model_for_data
    from sturdynet.models.resnet20 import ResNet20Params
    from sturdynet.core.registry import METHODS
    from sturdynet.models.arch import arch_of
    from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint

    spec = Component("resnet20", ResNet20Params(width=0.25))
    torch.manual_seed(0)
    base = model_for_data(spec, digits)
    steps = [component(METHODS, raw, "s", key="method")]
    model = run_steps(base, steps, MethodContext(data=digits)).eval()
    save_checkpoint(tmp_path / "v.pt", model, arch_of(spec, digits, steps))
    loaded, _ = load_checkpoint(tmp_path / "v.pt")
    x = digits.test.x[:16]
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
