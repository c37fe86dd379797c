"""Models from anywhere: factory / torchvision / timm specs, weights files, input normalization,
bad input with one-line errors, and structured pruning of architectures sturdynet did not build."""
from __future__ import annotations

import importlib
import os
import pickle
import sys

import pytest
import torch
from torch import nn

import byo_nets
from sturdynet.cli import main
from sturdynet.core.params import ConfigError
from sturdynet.models.spec import (InputNormalized, ModelSpec, build_from_spec, normalization_warning,
                                   parse_model_spec, read_state_dict)
from sturdynet.prune.graph import graph_prune, resize_to_shapes


def _import_reason(pkg: str):
    try:
        importlib.import_module(pkg)
        return None
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError beside the CPU torch
        return f"{pkg} does not import here: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def test_factory_spec_round_trips_through_dict():
    spec = parse_model_spec({"factory": "byo_nets:resnet_basic", "kwargs": {"width": 4},
                             "input_normalization": {"mean": [0.5], "std": [0.25]}, "weights": "w.pt"})
    assert spec.kind == "factory" and spec.extra == {"width": 4}
    assert parse_model_spec(spec.to_dict()) == spec
    model = build_from_spec(spec, 1, 10, (8, 8), load=False)
    assert isinstance(model, InputNormalized) and isinstance(model.net, byo_nets.ResNetBasic)


def test_builtin_spec_keeps_component_shape():
    spec = parse_model_spec({"name": "small_cnn", "width": 4})
    assert spec.kind == "builtin" and spec.kwargs() == {"width": 4}
    assert spec.to_dict() == {"name": "small_cnn", "width": 4}


@pytest.mark.parametrize("raw,expected", [
    ({"name": "smal_cnn"}, "did you mean small_cnn"),
    ({"factory": "no_such_pkg.nets:build"}, "cannot import module 'no_such_pkg.nets'"),
    ({"factory": "byo_nets:nope"}, "has no attribute 'nope'"),
    ({"factory": "byo_nets"}, "must be 'package.module:function'"),
    ({"name": "small_cnn", "input_normalization": {"mean": [0.5], "std": [0.0]}}, "must be positive"),
])
def test_bad_specs_name_the_problem(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        build_from_spec(parse_model_spec(raw), 1, 10, (8, 8))


def test_weights_mismatch_names_key_and_shape(tmp_path):
    torch.save(byo_nets.resnet_basic(width=4).state_dict(), tmp_path / "w.pt")
    spec = parse_model_spec({"factory": "byo_nets:resnet_basic", "kwargs": {"width": 8},
                             "weights": str(tmp_path / "w.pt")})
    with pytest.raises(ValueError, match=r"key 'stem.0.weight' has shape \(4, 1, 3, 3\) in the file but "
                                         r"\(8, 1, 3, 3\) in the model"):
        build_from_spec(spec, 1, 10, (8, 8))


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_malicious_pickle_is_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(str(tmp_path / "evil.pt"))


def test_weights_load_into_the_inner_network_of_a_normalized_wrapper(tmp_path):
    torch.manual_seed(0)
    net = byo_nets.concat_se(width=4).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    spec = parse_model_spec({"factory": "byo_nets:concat_se", "kwargs": {"width": 4}, "weights": str(tmp_path / "w.pt"),
                             "input_normalization": {"mean": [0.5], "std": [0.5]}})
    model = build_from_spec(spec, 1, 10, (8, 8)).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - 0.5) / 0.5), atol=1e-6)


def test_normalization_warning_only_for_unnormalized_external_models():
    spec = parse_model_spec({"factory": "byo_nets:resnet_basic"})
    assert "not known to normalize" in normalization_warning(build_from_spec(spec, 1, 10, (8, 8)), spec)
    wrapped = parse_model_spec({"factory": "byo_nets:resnet_basic", "input_normalization": {"mean": [0], "std": [1]}})
    assert normalization_warning(build_from_spec(wrapped, 1, 10, (8, 8)), wrapped) is None


@pytest.mark.parametrize("factory", ["resnet_basic", "concat_se"])
def test_graph_pruning_shrinks_and_reloads(factory):
    torch.manual_seed(0)
    model = getattr(byo_nets, factory)(width=8).eval()
    small, rep = graph_prune(model, (1, 8, 8), 0.5)
    assert rep["params_after"] < 0.6 * rep["params_before"] and rep["macs_after"] <= 0.5 * rep["macs_before"]
    x = torch.rand(3, 1, 8, 8)
    assert small(x).shape == (3, 10)
    rebuilt = resize_to_shapes(model, small.state_dict())
    rebuilt.load_state_dict(small.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), small.eval()(x))


def test_graph_pruning_removes_coupled_residual_channels_together():
    """Every producer of a residual sum keeps the same number of channels (and the same ones)."""
    model = byo_nets.resnet_basic(width=8).eval()
    small, _ = graph_prune(model, (1, 8, 8), 0.5)
    b = small.layer1[0]
    assert small.stem[0].out_channels == b.conv2.out_channels == small.layer1[1].conv2.out_channels == 4
    assert small.layer2[0].down[0].out_channels == small.layer2[0].conv2.out_channels == 8
    assert small.fc.out_features == 10


def test_unknown_model_in_recipe_exits_2_one_line(tmp_path, capsys):
    p = tmp_path / "r.yaml"
    p.write_text("data: {name: digits}\nmodel: {name: resnet_19}\nvariants: [{name: dense}]\nevaluate: [clean]\n")
    assert main(["-q", "run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and "resnet18" in err and err.count("\n") == 1


def test_torchvision_spec():
    reason = _import_reason("torchvision")
    if reason:
        pytest.skip(reason)
    spec = parse_model_spec({"name": "torchvision.resnet18"})
    model = build_from_spec(spec, 3, 10, (32, 32))
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ConfigError, match="nearest"):
        build_from_spec(parse_model_spec({"name": "torchvision.resnet_18"}), 3, 10, (32, 32))


def test_timm_spec():
    reason = _import_reason("timm")
    if reason:
        pytest.skip(reason)
    spec = parse_model_spec({"name": "timm.resnet18"})
    model = build_from_spec(spec, 3, 10, (32, 32))
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_missing_extra_names_the_package():
    if _import_reason("torchvision") is None:
        pytest.skip("torchvision imports here")
    with pytest.raises(ConfigError, match=r"needs torchvision, which does not import"):
        build_from_spec(parse_model_spec("torchvision.resnet18"), 3, 10, (32, 32))


def test_model_spec_is_plain_data():
    assert isinstance(parse_model_spec("small_cnn"), ModelSpec)
    assert not isinstance(parse_model_spec("small_cnn").to_dict()["name"], nn.Module)


def test_evaluate_plain_state_dict_from_the_command_line(tmp_path, capsys, digits):
    """A state_dict saved by plain PyTorch evaluates with --model-factory / --weights; its clean
    accuracy is the one computed directly."""
    torch.manual_seed(0)
    net = byo_nets.resnet_basic(width=4).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model-factory", "byo_nets:resnet_basic", "--model-kwargs", "{width: 4}",
                 "--weights", str(tmp_path / "w.pt"), "--data", "digits", "--device", "cpu",
                 "--out", str(out)]) == 0
    import json

    got = json.loads(out.read_text())["metrics"]["clean"]["accuracy"]
    with torch.no_grad():
        want = float((net(digits.test.x).argmax(1) == digits.test.y).float().mean())
    assert got == pytest.approx(want)
    capsys.readouterr()
    assert main(["evaluate", "--model-factory", "byo_nets:resnet_basic", "--weights", str(tmp_path / "w.pt"),
                 "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "key 'stem.0.weight' has shape (4, 1, 3, 3) in the file but (8, 1, 3, 3)" in err and err.count("\n") == 1


def test_factory_checkpoint_loads_back_only_when_named(tmp_path, digits):
    from sturdynet.models.arch import arch_of
    from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint

    spec = parse_model_spec({"factory": "byo_nets:concat_se", "kwargs": {"width": 4}})
    model = build_from_spec(spec, 1, 10, (8, 8)).eval()
    save_checkpoint(tmp_path / "c.pt", model, arch_of(spec, digits))
    with pytest.raises(ValueError, match="--model-factory byo_nets:concat_se"):
        load_checkpoint(tmp_path / "c.pt")
    back, _ = load_checkpoint(tmp_path / "c.pt", trusted_factory="byo_nets:concat_se")
    x = digits.test.x[:8]
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def _fake_torchvision():
    import types

    def get_model(name, **kw):
        if name != "resnet18":
            raise ValueError(f"Unknown model {name}")
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, kw["num_classes"]))

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(get_model=get_model, list_models=lambda: ["resnet18", "resnet34", "vgg11"])
    return tv


def test_torchvision_path_goes_through_get_model_only(monkeypatch):
    """With a stand-in torchvision module: the spec calls get_model(name, num_classes=data's),
    and an unknown name lists the nearest names (list_models is consulted only then)."""
    monkeypatch.setitem(sys.modules, "torchvision", _fake_torchvision())
    model = build_from_spec(parse_model_spec("torchvision.resnet18"), 3, 7, (8, 8))
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 7)
    with pytest.raises(ConfigError, match=r"nearest: torchvision.resnet18, torchvision.resnet34"):
        build_from_spec(parse_model_spec("torchvision.resnet_18"), 3, 7, (8, 8))


def test_timm_path_goes_through_create_model(monkeypatch):
    import types

    seen = {}

    def create_model(name, **kw):
        if name != "tiny":
            raise RuntimeError(f"Unknown model ({name})")
        seen.update(kw)
        return nn.Sequential(nn.Conv2d(kw["in_chans"], 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, kw["num_classes"]))

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model,
                                                                   list_models=lambda: ["tiny", "tinier"]))
    model = build_from_spec(parse_model_spec({"name": "timm.tiny"}), 1, 10, (8, 8))
    assert seen == {"num_classes": 10, "in_chans": 1, "pretrained": False}
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="nearest: timm.tiny"):
        build_from_spec(parse_model_spec({"name": "timm.tinyy"}), 1, 10, (8, 8))
