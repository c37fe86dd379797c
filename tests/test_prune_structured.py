"""Structured (channel) pruning: expected params and MACs, and the smaller model computes
exactly what the channel-masked model computes (small_cnn, mlp, resnet20, resnet18)."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from sturdynet.core.params import ConfigError, from_dict
from sturdynet.models import build_model
from sturdynet.prune.channel_groups import find_groups
from sturdynet.prune.macs import count_macs
from sturdynet.core.masks import get_masks
from sturdynet.prune.structured import StructuredParams, compact, resize_to_state_dict, structured_prune
from sturdynet.core.registry import METHODS, MODELS


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so that a forgotten beta shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
    return model.eval()


def _pair(model, **kw):
    masked, _ = structured_prune(model, StructuredParams(physical=False, **kw))
    small, report = structured_prune(model, StructuredParams(physical=True, **kw))
    return masked.eval(), small.eval(), report


def _close(a, b):
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


def test_mac_counter_known_answer():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0  # 9 non-zeros
    r = count_macs(nn.Sequential(conv, nn.Flatten(), nn.Linear(75, 4)), (2, 5, 5))
    assert r["layers"]["0"]["macs"] == 25 * 3 * 2 * 9
    assert r["layers"]["0"]["nonzero_macs"] == 25 * 9
    assert r["layers"]["2"]["macs"] == 75 * 4
    assert r["macs"] == 1350 + 300
    with pytest.raises(ValueError):
        count_macs(conv, (0, 5, 5))


def test_small_cnn_expected_params_and_macs():
    # width 8 on 1x8x8: conv(1->8) conv(8->8) pool conv(8->16) conv(16->16) pool gap linear(16->10)
    model = _randomize_bn(build_model("small_cnn", 1, 10, (8, 8), width=8))
    groups = find_groups(model)
    assert [g.producer for g in groups] == ["1", "4", "8", "11"]
    assert groups[-1].consumers == [("17", 1)]
    masked, small, report = _pair(model, amount=0.5)
    assert report["params_before"] == 4370
    # kept 4, 4, 8, 8: 36 + 8 + 144 + 8 + 288 + 16 + 576 + 16 + 90
    assert report["params_after"] == 1182 and report["params_removed"] == 3188
    assert count_macs(model, (1, 8, 8))["macs"] == 64 * 72 + 64 * 576 + 16 * 1152 + 16 * 2304 + 160
    assert count_macs(small, (1, 8, 8))["macs"] == 64 * 36 + 64 * 144 + 16 * 288 + 16 * 576 + 80
    x = torch.rand(16, 1, 8, 8)
    _close(masked(x), small(x))
    assert not torch.allclose(model(x), small(x), atol=1e-3)


def test_zeroing_the_conv_alone_is_not_the_reference():
    """A channel whose conv filter is zero still outputs relu(beta) after BN: the masked
    reference must also mask gamma and beta, and then matches the smaller model."""
    model = _randomize_bn(build_model("small_cnn", 1, 10, (8, 8), width=8))
    masked, small, _ = _pair(model, amount=0.5)
    conv_only = build_model("small_cnn", 1, 10, (8, 8), width=8)
    conv_only.load_state_dict(model.state_dict())
    conv_only.eval()
    with torch.no_grad():
        for name, mask in get_masks(masked).items():
            mod, p = name.rsplit(".", 1)
            m = conv_only.get_submodule(mod)
            if isinstance(m, nn.Conv2d) and p == "weight":
                m.weight.mul_(mask)
    x = torch.rand(8, 1, 8, 8)
    assert not torch.allclose(conv_only(x), small(x), atol=1e-3)
    _close(masked(x), small(x))


def test_mlp_and_flatten_chains():
    mlp = build_model("mlp", 1, 10, (8, 8), hidden=(32, 16))
    masked, small, rep = _pair(mlp, amount=0.25)
    assert [m.out_features for m in small if isinstance(m, nn.Linear)] == [24, 12, 10]
    x = torch.rand(4, 1, 8, 8)
    _close(masked(x), small(x))
    # conv -> bn -> relu -> flatten -> linear: channel c owns in_features c*16 .. c*16+15
    net = _randomize_bn(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(6 * 16, 5)))
    masked, small, _ = _pair(net, amount=0.5)
    assert small[0].out_channels == 3 and small[4].in_features == 48
    x = torch.rand(4, 3, 4, 4)
    _close(masked(x), small(x))


def test_l1_removes_the_smallest_filters():
    net = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([3.0, -0.5, 2.0, 0.1]).view(4, 1, 1, 1))
    small, rep = structured_prune(net, StructuredParams(amount=0.5))
    assert small[0].weight.flatten().tolist() == [3.0, 2.0]
    assert rep["groups"]["0"] == {"before": 4, "after": 2}


def test_bn_global_threshold_across_layers():
    net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4),
                        nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.01, 0.02, 0.03, 1.0]))
        net[4].weight.copy_(torch.tensor([0.5, 0.6, 0.7, 0.8]))
    _randomize_bn(net)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.01, 0.02, 0.03, 1.0]))
        net[4].weight.copy_(torch.tensor([0.5, 0.6, 0.7, 0.8]))
    masked, small, rep = _pair(net, amount=0.375, criterion="bn", scope="global")  # 3 of 8 channels
    assert rep["groups"]["0"]["after"] == 1 and rep["groups"]["3"]["after"] == 4
    x = torch.rand(4, 1, 3, 3)
    _close(masked(x), small(x))


def test_resnet20_residual_channels_untouched_and_equal():
    model = _randomize_bn(build_model("resnet20", 3, 10, (32, 32)))
    groups = find_groups(model)
    assert len(groups) == 9 and all(g.producer.endswith("conv1") and "layer" in g.producer for g in groups)
    masked, small, rep = _pair(model, amount=0.5)
    for blk in small.modules():
        if hasattr(blk, "conv2") and hasattr(blk, "bn2"):
            assert blk.conv1.out_channels == blk.bn1.num_features == blk.conv2.in_channels
            assert blk.conv2.out_channels == blk.bn2.num_features  # residual stream intact
            assert blk.conv1.out_channels * 2 == blk.conv2.out_channels
    macs = count_macs(small, (3, 32, 32))["macs"]
    assert macs < count_macs(model, (3, 32, 32))["macs"]
    x = torch.rand(4, 3, 32, 32)
    _close(masked(x), small(x))


@pytest.mark.skipif("resnet18" not in MODELS, reason="resnet18 not registered")
def test_resnet18_projection_shortcuts_equal():
    model = _randomize_bn(build_model("resnet18", 3, 10, (16, 16)))
    masked, small, rep = _pair(model, amount=0.75, criterion="bn")
    assert rep["params_removed"] > 0
    x = torch.rand(2, 3, 16, 16)
    _close(masked(x), small(x))


def test_masked_finetuning_then_compact(digits):
    from sturdynet.train import TrainConfig, fit

    model = build_model("small_cnn", 1, 10, (8, 8), width=8)
    masked, _ = structured_prune(model, StructuredParams(amount=0.5, physical=False))
    fit(masked, digits, TrainConfig(epochs=1, lr=0.1, batch_size=128), seed=0)
    small = compact(masked).eval()
    masked.eval()
    assert sum(p.numel() for p in small.parameters()) == 1182
    _close(masked(digits.test.x[:32]), small(digits.test.x[:32]))


@pytest.mark.parametrize("physical", [True, False])
def test_method_checkpoint_roundtrip(physical):
    method = METHODS.get("prune.structured")()
    params = from_dict(StructuredParams, {"amount": 0.5, "physical": physical})
    model = _randomize_bn(build_model("resnet20", 3, 10, (16, 16)))
    pruned = method.apply(model, params)
    buf = io.BytesIO()
    torch.save(pruned.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    shell = method.prepare(build_model("resnet20", 3, 10, (16, 16)), params)
    shell.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 16, 16)
    _close(pruned.eval()(x), shell.eval()(x))


def test_global_scope_reload_via_state_dict():
    params = StructuredParams(amount=0.5, criterion="bn", scope="global")
    pruned, _ = structured_prune(_randomize_bn(build_model("small_cnn", 1, 10, (8, 8), width=8)), params)
    with pytest.raises(ValueError, match="resize_to_state_dict"):
        METHODS.get("prune.structured")().prepare(build_model("small_cnn", 1, 10, (8, 8), width=8), params)
    shell = resize_to_state_dict(build_model("small_cnn", 1, 10, (8, 8), width=8), pruned.state_dict())
    shell.load_state_dict(pruned.state_dict(), strict=True)


@pytest.mark.parametrize("physical", [True, False])
def test_global_scope_checkpoint_round_trip(tmp_path, physical):
    from sturdynet.core.params import Component
    from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint

    params = StructuredParams(amount=0.5, criterion="bn", scope="global", physical=physical)
    base = _randomize_bn(build_model("small_cnn", 1, 10, (8, 8), width=8))
    pruned = METHODS.get("prune.structured")().apply(base, params)
    arch = {"model": {"name": "small_cnn", "width": 8}, "data": {"in_channels": 1, "num_classes": 10,
            "input_size": [8, 8], "mean": [0.0], "std": [1.0]},
            "steps": [Component("prune.structured", params).to_dict("method")]}
    save_checkpoint(tmp_path / "s.pt", pruned, arch)
    loaded, _ = load_checkpoint(tmp_path / "s.pt")
    x = torch.rand(4, 1, 8, 8)
    _close(pruned.eval()(x), loaded(x))


def test_bad_parameters():
    with pytest.raises(ConfigError, match="scope"):
        from_dict(StructuredParams, {"scope": "global", "criterion": "l1"})
    with pytest.raises(ConfigError, match="amount"):
        from_dict(StructuredParams, {"amount": 1.0})
    with pytest.raises(ValueError, match="no prunable channel group"):
        structured_prune(nn.Sequential(nn.Linear(3, 2)), StructuredParams())


def test_l1_channel_choice_matches_torch_ln_structured():
    """Reference: torch.nn.utils.prune.ln_structured(n=1, dim=0) picks the same filters."""
    import torch.nn.utils.prune as tprune

    torch.manual_seed(3)
    model = build_model("small_cnn", 1, 10, (8, 8), width=8)
    masked, _ = structured_prune(model, StructuredParams(amount=0.5, physical=False))
    for name in ("1", "4", "8", "11"):
        conv = copy.deepcopy(model.get_submodule(name))
        tprune.ln_structured(conv, "weight", amount=0.5, n=1, dim=0)
        assert torch.equal(conv.weight_mask.bool(), masked.get_submodule(name).weight_mask)


def test_quantized_layers_are_refused():
    model = build_model("small_cnn", 1, 10, (8, 8), width=8)
    quant = METHODS.get("quant.uniform")()
    q = quant.apply(model, from_dict(METHODS.params("quant.uniform"), {"bits": 8}))
    with pytest.raises(ValueError, match="before quantization"):
        structured_prune(q, StructuredParams())


def test_vgg_small_numbered_layers_equal():
    model = _randomize_bn(build_model("vgg_small", 3, 10, (8, 8), width=0.125))
    groups = find_groups(model)
    assert [g.producer for g in groups] == [f"conv{i}" for i in range(6)]
    assert groups[-1].consumers == [("fc", 1)]
    masked, small, rep = _pair(model, amount=0.5)
    assert small.conv5.out_channels == 32 and small.fc.in_features == 32
    x = torch.rand(4, 3, 8, 8)
    _close(masked(x), small(x))
    # on 32x32 the flatten feeds fc 4x4 positions per channel
    model = _randomize_bn(build_model("vgg_small", 3, 10, (32, 32), width=0.125))
    masked, small, _ = _pair(model, amount=0.25, criterion="bn")
    assert small.fc.in_features == small.conv5.out_channels * 16
    x = torch.rand(2, 3, 32, 32)
    _close(masked(x), small(x))
