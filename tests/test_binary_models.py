"""Binary models and the ``binarize`` method: shapes, gradient modes, structure, recipe use."""
import pytest
import torch
from torch import nn

from sturdynet.core.method import MethodContext
from sturdynet.models.common import build_model
from sturdynet.quant import QuantConv2d, QuantLinear, gradient_mode
from sturdynet.quant.binary import BinaryWeightQuantizer, SignActivation, binary_layers
from sturdynet.quant.binary.binarize import Binarize, BinarizeParams
from sturdynet.run.recipe import parse_recipe
from sturdynet.core.registry import MODELS
from sturdynet.core.storage import compression_facts

BINARY = ["bireal_resnet20", "bireal_resnet18", "binary_vgg_small"]
SMALL = {"bireal_resnet20": {"width": 4}, "bireal_resnet18": {"width": 4}, "binary_vgg_small": {"width": 4}}


def test_registered():
    assert set(BINARY) <= set(MODELS.names())


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 32, 32)])
def test_shapes(name, shape):
    torch.manual_seed(0)
    m = build_model(name, shape[1], 10, shape[2:], **SMALL[name])
    assert m(torch.rand(*shape)).shape == (2, 10)
    assert isinstance(m.normalize, nn.Module)


@pytest.mark.parametrize("name", BINARY)
def test_default_widths_and_structure(name):
    m = build_model(name, 3, 10, (32, 32))
    expected = {"bireal_resnet20": ((16, 32, 64), 18), "bireal_resnet18": ((64, 128, 256, 512), 16),
                "binary_vgg_small": ((128, 128, 256, 256, 512, 512), 5)}[name]
    assert m.widths == expected[0]
    layers = binary_layers(m)
    assert len(layers) == expected[1]
    for _, layer in layers:  # every binary conv binarizes its input and its weights
        assert isinstance(layer.act_quantizer, SignActivation) and layer.storage_bits("weight") == 1
    convs = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert not isinstance(convs[0], QuantConv2d) and not isinstance(convs[-1], QuantLinear)


def test_bireal_resnet20_parameter_count_matches_hand_count():
    m = build_model("bireal_resnet20", 3, 10, (32, 32))
    convs = 16 * 27 + (6 * 16 * 16 + (16 * 32 + 5 * 32 * 32) + (32 * 64 + 5 * 64 * 64)) * 9
    down = 16 * 32 + 32 * 64
    bn = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64 + 32 + 64)
    fc = 64 * 10 + 10
    assert sum(p.numel() for p in m.parameters()) == convs + down + bn + fc


@pytest.mark.parametrize("name", BINARY)
def test_true_gradient_differs_from_ste_and_forward_does_not(name):
    torch.manual_seed(0)
    m = build_model(name, 1, 10, (8, 8), **SMALL[name]).eval()
    x = torch.rand(2, 1, 8, 8)
    grads, outs = [], []
    for mode in ("ste", "true"):
        xi = x.clone().requires_grad_(True)
        with gradient_mode(m, mode):
            out = m(xi)
            out.sum().backward()
        grads.append(xi.grad)
        outs.append(out.detach())
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(grads[0], grads[1])
    if name == "binary_vgg_small":  # no real-valued path around the sign activations
        assert torch.count_nonzero(grads[1]) == 0


def test_estimator_params_reach_every_quantizer():
    m = build_model("bireal_resnet20", 3, 10, (8, 8), width=4, estimator="reste", weight_estimator="ste")
    est = {(type(q).__name__, q.estimator) for q in m.modules() if hasattr(q, "estimator")}
    assert est == {("SignActivation", "reste"), ("BinaryWeightQuantizer", "ste")}


def test_bad_widths():
    with pytest.raises(ValueError, match="takes 3 widths"):
        build_model("bireal_resnet20", 3, 10, (32, 32), widths=(8, 8))
    with pytest.raises(ValueError, match="takes 6 widths"):
        build_model("binary_vgg_small", 3, 10, (32, 32), widths=(8, 8, 8))


def _small_cnn():
    return build_model("small_cnn", 1, 10, (8, 8), width=4)


def test_binarize_keeps_first_and_last_full_precision():
    m = Binarize().prepare(_small_cnn(), BinarizeParams())
    layers = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert [isinstance(layer, (QuantConv2d, QuantLinear)) for layer in layers] == [False, True, True, True, False]
    assert len(binary_layers(m)) == 3
    # one bit per binarized weight plus one float alpha per output channel
    facts = compression_facts(m)
    assert facts["bits"] == 1
    m2 = Binarize().prepare(_small_cnn(), BinarizeParams(binarize_first=True, binarize_last=True))
    assert len(binary_layers(m2)) == 5


def test_binarize_forward_values():
    torch.manual_seed(0)
    base = _small_cnn()
    m = Binarize().prepare(base, BinarizeParams(activations=False))
    layer = binary_layers(m)[0][1]
    w = layer.weight.detach()
    alpha = w.abs().flatten(1).mean(1).view(-1, 1, 1, 1)
    torch.testing.assert_close(layer.qweight(), torch.sign(w) * alpha)
    assert layer.act_quantizer is None
    assert base is not m and not binary_layers(base)  # the input model is untouched


def test_binarize_true_mode_blocks_input_gradient_through_sign():
    torch.manual_seed(0)
    m = Binarize().prepare(_small_cnn(), BinarizeParams(estimator="clipped_ste")).eval()
    for mode, zero in (("ste", False), ("true", True)):
        x = torch.rand(3, 1, 8, 8, requires_grad=True)
        with gradient_mode(m, mode):
            m(x).sum().backward()
        assert (torch.count_nonzero(x.grad) == 0) == zero


def test_binarize_on_binary_model_switches_estimators():
    m = build_model("bireal_resnet20", 1, 10, (8, 8), width=4)
    m2 = Binarize().prepare(m, BinarizeParams(estimator="reste", weight_estimator="clipped_ste"))
    assert len(binary_layers(m2)) == len(binary_layers(m))
    assert {q.estimator for q in m2.modules() if isinstance(q, SignActivation)} == {"reste"}
    assert {q.estimator for q in m2.modules() if isinstance(q, BinaryWeightQuantizer)} == {"clipped_ste"}


def test_binarize_needs_context_to_train():
    with pytest.raises(TypeError, match="binarize trains the network: its ctx argument must be a TrainingContext"):
        Binarize().apply(_small_cnn(), BinarizeParams(epochs=1), MethodContext())
    with pytest.raises(TypeError, match="ctx"):
        Binarize().apply(_small_cnn(), BinarizeParams(epochs=0))  # the argument is required


def test_recipe_with_binary_model_and_variants():
    r = parse_recipe({"data": "digits", "model": {"name": "bireal_resnet20", "width": 8, "estimator": "approx_sign"},
                      "train": {"epochs": 1, "callbacks": [{"name": "ovsw"}]},
                      "variants": [{"name": "dense"},
                                   {"name": "reste", "method": "binarize", "estimator": "reste", "epochs": 1},
                                   {"name": "grown", "method": "ra_bnn.grow", "grow_epochs": 1, "retrain_epochs": 1}],
                      "evaluate": ["clean"]})
    assert r.variants[1].steps[0].params.estimator == "reste"
    assert r.variants[2].steps[0].params.grow_factor == 2.0
    with pytest.raises(ValueError, match="estimator"):
        parse_recipe({"data": "digits", "model": "small_cnn",
                      "variants": [{"name": "b", "method": "binarize", "estimator": "sine"}], "evaluate": ["clean"]})


@pytest.mark.parametrize("name,shortcut", [("resnet20", "A"), ("resnet20", "B"), ("resnet18", None)])
def test_bireal_twin_copies_the_float_weights(name, shortcut):
    from sturdynet.quant.binary.bireal_init import BiRealInit, BiRealInitParams

    torch.manual_seed(0)
    kw = {"shortcut": shortcut} if shortcut else {}
    f = build_model(name, 3, 10, (32, 32), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), **kw)
    t = BiRealInit().prepare(f, BiRealInitParams(estimator="reste"))
    assert t.arch == ("bireal_resnet20" if name == "resnet20" else "bireal_resnet18")
    assert torch.equal(t.stem.weight, f.conv1.weight) and torch.equal(t.fc.weight, f.fc.weight)
    assert torch.equal(t.normalize.std, f.normalize.std)
    assert torch.equal(t.units[1].conv.weight, f.layer1[0].conv2.weight)
    first = len(t.units) // len(t.widths)  # first unit of stage 2
    assert torch.equal(t.units[first].conv.weight, f.layer2[0].conv1.weight)
    assert torch.equal(t.units[first].bn.running_var, f.layer2[0].bn1.running_var)
    sc = t.units[first].shortcut[1].weight[:, :, 0, 0]
    if shortcut == "A":  # option A becomes the embedding at pad_front
        pad = f.layer2[0].shortcut.pad_front
        assert torch.equal(sc, torch.eye(sc.shape[0], sc.shape[1]).roll(pad, 0))
    elif name == "resnet18":  # option B is copied
        assert torch.equal(sc, f.layer2[0].shortcut[0].weight[:, :, 0, 0])
    assert {q.estimator for q in t.modules() if isinstance(q, SignActivation)} == {"reste"}
    assert t(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="CIFAR ResNet"):
        BiRealInit().prepare(_small_cnn(), BiRealInitParams())
