"""Fine-Pruning on networks sturdynet did not build (graph engine, arXiv 1805.12185 + DepGraph
arXiv 2301.12900): a ResNet with residual adds, a concat + squeeze-excitation net and a
MobileNetV2-style net with depthwise convs. Channels made dormant by hand go first, the
parameter count drops by the hand-computed amount, the pruned model computes what the
masked one computed, and the checkpoint reloads."""
from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import byo_nets
from sturdynet.core.params import Component
from sturdynet.core.registry import METHODS
from sturdynet.defenses.fine_pruning import FinePruning, FinePruningParams
from sturdynet.defenses.fine_pruning_graph import pick_coupled
from sturdynet.models.arch import arch_of
from sturdynet.models.spec import InputNormalized, parse_model_spec
from sturdynet.prune.coupled import coupled_channels
from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint
from sturdynet.train import TrainConfig
from sturdynet.train.context import training_context

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "own_model"))
import net as example_net  # noqa: E402

NORM = {"mean": [0.3], "std": [0.37]}


def _mobilenet() -> nn.Module:
    return InputNormalized(example_net.build_net(width=4), NORM["mean"], NORM["std"])


# case -> (builder, factory spec, layer param, conv pruned, its batch norm, dormant channels,
#          params removed per pruned channel, computed by hand from the layer shapes)
RESNET = (lambda: byo_nets.resnet_basic(width=4), {"factory": "byo_nets:resnet_basic", "kwargs": {"width": 4}})
CASES = {
    # the last conv that is not a residual stream: layer2.1.conv1 (8 inputs * 3*3), bn1, conv2's inputs (8 * 3*3)
    "resnet_basic": (*RESNET, None, "layer2.1.conv1", "layer2.1.bn1", [6, 1], 72 + 2 + 72),
    # the residual stream of stage 2 when named (8 channels): conv2 of both blocks (8*3*3 each), the 1x1
    # shortcut conv (4 inputs), three batch norms (gamma, beta), the next block's conv1 inputs (8*3*3), fc (10)
    "resnet_stream": (*RESNET, "layer2.1.conv2", "layer2.1.conv2", "layer2.1.bn2", [6, 1],
                      72 + 72 + 4 + 3 * 2 + 72 + 10),
    # conv.0: 8 inputs * 3*3, its batch norm, fc (10 outputs)
    "concat_se": (lambda: byo_nets.concat_se(width=4), {"factory": "byo_nets:concat_se", "kwargs": {"width": 4}},
                  None, "conv.0", "conv.1", [5, 2], 8 * 9 + 2 + 10),
    # head 1x1 conv: 8 inputs, its batch norm, the classifier (10 outputs)
    "mobilenet": (_mobilenet, {"factory": "net:build_net", "kwargs": {"width": 4}, "input_normalization": NORM},
                  None, "net.head.0", "net.head.1", [3, 11, 0], 8 + 2 + 10),
}


@pytest.fixture(scope="module")
def small_digits():
    from sturdynet.core.params import component
    from sturdynet.core.registry import DATASETS
    from sturdynet.data import load_data

    return load_data(component(DATASETS, {"name": "digits", "subset": {"train": 120, "test": 40}}, "data"), 0)


def _dormant(net: str) -> nn.Module:
    """The untrained net with the dormant channels' filters zeroed and their batch-norm
    shift so negative that the nonlinearity after it (or after the residual add) gives 0."""
    build, _, _, conv, bn, dormant, _ = CASES[net]
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        for c in dormant:
            model.get_submodule(conv).weight[c] = 0
            model.get_submodule(bn).bias[c] = -100.0
    return model


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _fine_prune(model, data, **kw):
    params = FinePruningParams(**{"max_accuracy_drop": None, "epochs": 0, **kw})
    ctx = training_context(data, TrainConfig(epochs=1, batch_size=64), seed=0, device=torch.device("cpu"))
    out = FinePruning().apply(model, params, ctx)
    return out.eval(), ctx.log["prune.fine_pruning"], params


@pytest.mark.parametrize("net", list(CASES))
def test_last_conv_loses_its_dormant_channels_first(net, small_digits, tmp_path):
    _, spec, layer, conv, _, dormant, per_channel = CASES[net]
    model = _dormant(net)
    n = len(dormant) + 1
    c = model.get_submodule(conv).out_channels
    out, log, params = _fine_prune(model, small_digits, amount=n / c, layer=layer)
    assert log["engine"] == "graph" and log["layer"] == conv and log["channels_pruned"] == n
    act = torch.tensor(log["mean_activation"])
    assert act[dormant].abs().max() == 0 and (act[[i for i in range(c) if i not in dormant]] > 0).all()
    assert sorted(log["pruned_channels"][:len(dormant)]) == sorted(dormant)  # dormant first, then the weakest live one
    assert _params(model) - _params(out) == n * per_channel == log["params_before"] - log["params_after"]
    assert out.get_submodule(conv).out_channels == c - n and model.get_submodule(conv).out_channels == c
    x = small_digits.test.x
    masked, mlog, _ = _fine_prune(model, small_digits, amount=n / c, layer=layer, physical=False)
    assert mlog["pruned_channels"] == log["pruned_channels"]
    with torch.no_grad():
        assert torch.allclose(out(x), masked(x), atol=1e-5)
    # checkpoints: physical (shapes from the state_dict) and masked (masks from the state_dict)
    for name, m, p in (("phys", out, params), ("mask", masked, dataclasses.replace(params, physical=False))):
        step = Component("prune.fine_pruning", p)
        path = tmp_path / f"{name}.safetensors"
        save_checkpoint(path, m, arch_of(parse_model_spec(spec), small_digits, [step]))
        loaded, _ = load_checkpoint(path, trusted_factory=spec["factory"])
        with torch.no_grad():
            assert torch.equal(loaded(x), m(x))


def test_residual_stream_is_passed_over_unless_named(small_digits):
    model = _dormant("resnet_stream")
    out, log, _ = _fine_prune(model, small_digits, amount=0.25)
    assert log["layer"] == "layer2.1.conv1"
    assert log["coupled_layers"] == ["layer2.1.conv1", "layer2.1.bn1", "layer2.1.conv2"]
    assert log["skipped_layers"][0] == {"layer": "layer2.1.conv2", "reason": "its channels are a residual stream "
                                        "(3 layers add into them); name it in layer to prune the whole stream"}
    assert out.layer2[1].conv1.out_channels == 6 and out.fc.in_features == 8
    stream, slog, _ = _fine_prune(model, small_digits, amount=0.25, layer="layer2.1.conv2")
    assert slog["activations_read_at"] == "fc"  # after the residual add, relu and pooling
    assert sorted(slog["pruned_channels"]) == [1, 6]
    assert set(slog["coupled_layers"]) >= {"layer2.0.conv2", "layer2.0.down.0", "layer2.1.conv1", "fc"}
    for name in ("layer2.0.conv2", "layer2.0.down.0", "layer2.1.conv2"):
        assert stream.get_submodule(name).out_channels == 6
    assert stream.layer2[1].conv1.in_channels == 6 and stream.fc.in_features == 6
    assert stream.layer2[0].conv1.out_channels == 8 and stream.layer1[1].conv2.out_channels == 4


@pytest.mark.parametrize("net,layer,expect", [
    # a concatenation branch: its channels sit at offset 4 of the SE and of conv.0's input
    ("concat_se", "branch_b.0", {"branch_b.0": 2, "se.fc2": 6, "se.fc1.in": 6, "conv.0.in": 6}),
    # an expand conv: the depthwise conv after it loses the same channels
    ("mobilenet", "net.blocks.3.block.0", {"net.blocks.3.block.0": 30, "net.blocks.3.block.3": 30,
                                            "net.blocks.3.block.6.in": 30}),
])
def test_coupled_groups_behind_concat_and_depthwise(net, layer, expect, small_digits):
    torch.manual_seed(0)
    model = CASES[net][0]().eval()
    out, log, _ = _fine_prune(model, small_digits, amount=0.5 if net == "concat_se" else 2 / 32, layer=layer)
    masked, _, _ = _fine_prune(model, small_digits, amount=0.5 if net == "concat_se" else 2 / 32, layer=layer,
                               physical=False)
    for name, size in expect.items():
        m = out.get_submodule(name.removesuffix(".in"))
        assert (m.in_channels if name.endswith(".in") else m.out_channels) == size, name
    x = small_digits.test.x
    with torch.no_grad():
        assert torch.allclose(out(x), masked(x), atol=1e-5)
    if net == "concat_se":  # the pruned branch-b channels are read at offset 4 (4 + i) of conv.0's input
        dead = [4 + i for i in log["pruned_channels"]]
        assert not masked.conv[0].weight[:, dead].any() and masked.conv[0].weight[:, :4].all()


def test_graph_engine_agrees_with_the_module_engine_on_a_builtin_cnn(digits):
    from sturdynet.models import model_for_data
    from sturdynet.models.small_cnn import SmallCNNParams

    torch.manual_seed(0)
    model = model_for_data(Component("small_cnn", SmallCNNParams(width=4)), digits).eval()
    logs, outs = {}, {}
    for engine in ("modules", "graph"):
        outs[engine], logs[engine], _ = _fine_prune(model, digits, amount=0.5, max_accuracy_drop=0.02, samples=200,
                                                    engine=engine)
    g, m = logs["graph"], logs["modules"]
    assert g["layer"] == m["layer"] and g["pruned_channels"] == m["pruned_channels"] and g["curve"] == m["curve"]
    assert torch.allclose(torch.tensor(g["mean_activation"]), torch.tensor(m["mean_activation"]), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(outs["graph"](digits.test.x), outs["modules"](digits.test.x), atol=1e-5)


class _TiedToInput(nn.Module):
    """conv2's output is added to the input image: its channels are tied to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc((self.conv2(torch.relu(self.conv1(x))) + x).mean((2, 3)))


class _StreamOnly(nn.Module):
    """Every conv adds into one stream: the stream is the only group to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.conv1, self.fc = nn.Conv2d(4, 5, 3, padding=1), nn.Conv2d(5, 5, 3, padding=1), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.conv0(x))
        return self.fc(torch.relu(h + self.conv1(h)).mean((2, 3)))


def test_layer_choice_skips_groups_tied_to_input_or_output_and_names_bad_layers():
    torch.manual_seed(0)
    x = torch.rand(8, 4, 6, 6)
    cc, order, skipped = pick_coupled(_TiedToInput().eval(), None, x)
    assert order == ["conv1", "conv2", "fc"] and cc.root == "conv1" and skipped[0]["layer"] == "conv2"
    head_conv = nn.Sequential(nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Conv2d(5, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert pick_coupled(head_conv.eval(), None, x)[0].root == "0"  # the conv classifier's outputs stay
    with pytest.raises(ValueError, match="layer: '2' is not a conv / linear layer before the classifier"):
        pick_coupled(head_conv, "2", x)
    assert coupled_channels(head_conv, "0", x[:1]).readers[0][0] == "2"
    cc, _, skipped = pick_coupled(_StreamOnly().eval(), None, x)
    assert cc.root == "conv1" and cc.member_names == ["conv1", "conv0"] and skipped == []


def test_graph_engine_refuses_masked_models_and_reports_reasons(small_digits):
    model = _dormant("concat_se")
    masked, _, _ = _fine_prune(model, small_digits, amount=0.25, physical=False)
    with pytest.raises(ValueError, match="already carries pruning masks; apply prune.fine_pruning first"):
        _fine_prune(masked, small_digits, amount=0.25)
    with pytest.raises(ValueError, match="prepare_for_state"):
        FinePruning().prepare(copy.deepcopy(model), FinePruningParams(physical=False))
    assert METHODS.validate("prune.fine_pruning", {"engine": "graph"}, "m").engine == "graph"
