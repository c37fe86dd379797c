"""The model zoo: every registered (non-binary) model on digits-sized and CIFAR-sized inputs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sturdynet.models  # noqa: F401  (registers the models)
from sturdynet.core.params import ConfigError, component
from sturdynet.models import Normalize, build_model
from sturdynet.models.resnet_cifar import BasicBlock, ShortcutA
from sturdynet.core.registry import MODELS

ZOO = [n for n in MODELS.names() if ".binary" not in MODELS.get(n).__module__]
SHAPES = [(2, 1, 8, 8), (2, 3, 32, 32)]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(name: str, shape, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, shape[1], 10, shape[2:], mean=(0.5,) * shape[1], std=(0.25,) * shape[1], **kw)


def test_zoo_has_the_architectures():
    assert {"resnet20", "resnet18", "vgg_small", "small_cnn", "mlp"} <= set(ZOO)


@pytest.mark.parametrize("shape", SHAPES, ids=["8x8x1", "32x32x3"])
@pytest.mark.parametrize("name", ZOO)
def test_output_shape_normalize_first_and_gradients(name, shape):
    model = _build(name, shape)
    first = next(model.children())
    assert isinstance(first, Normalize), f"{name}: first layer is {type(first).__name__}"
    assert torch.allclose(first.mean.flatten(), torch.full((shape[1],), 0.5))
    x = torch.rand(shape, requires_grad=True)
    out = model(x)
    assert out.shape == (shape[0], 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{pname} got no gradient"
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0
    assert float(x.grad.abs().sum()) > 0, "the input gets a gradient (attacks need it)"
    model.eval()
    with torch.no_grad():
        assert model(x.detach()).shape == (shape[0], 10)


@pytest.mark.parametrize("name", ZOO)
def test_only_plain_layers_hold_parameters(name):
    """The quantization converter and pruning replace nn.Conv2d / nn.Linear / nn.BatchNorm2d."""
    model = _build(name, SHAPES[1])
    for mname, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            assert type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d), f"{name}.{mname} is {type(m).__name__}"


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "vgg_small"])
def test_same_seed_same_init(name):
    a, b = _build(name, SHAPES[0]), _build(name, SHAPES[0])
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("name, kw, expected", [
    # hand counts: conv weights + BN affine + fc; see the models' docstrings
    ("resnet20", {}, 269_722),                       # option A (He et al. Sec. 4.2)
    ("resnet20", {"shortcut": "B"}, 272_474),        # + 1x1 projections 16->32 and 32->64 with BN
    ("resnet20", {"depth": 32}, 464_154),
    ("resnet20", {"depth": 56}, 853_018),
    ("resnet18", {}, 11_173_962),
    ("vgg_small", {}, 4_660_106),
])
def test_parameter_counts_on_cifar10(name, kw, expected):
    assert _count(_build(name, SHAPES[1], **kw)) == expected


def test_resnet20_hand_count_formula():
    """6n+2 option-A ResNet: stem 16*3*9 + 32, 3 stages, fc 64*10 + 10."""
    for n in (1, 2, 3, 5):
        stage1 = n * (2 * 9 * 16 * 16 + 4 * 16)
        stage2 = (9 * 16 * 32 + 9 * 32 * 32 + 4 * 32) + (n - 1) * (2 * 9 * 32 * 32 + 4 * 32)
        stage3 = (9 * 32 * 64 + 9 * 64 * 64 + 4 * 64) + (n - 1) * (2 * 9 * 64 * 64 + 4 * 64)
        want = 9 * 3 * 16 + 32 + stage1 + stage2 + stage3 + 64 * 10 + 10
        assert _count(_build("resnet20", SHAPES[1], depth=6 * n + 2)) == want


def test_resnet_structure_for_pruning():
    model = _build("resnet20", SHAPES[1])
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    for b in blocks:
        assert isinstance(b.conv1, nn.Conv2d) and isinstance(b.bn1, nn.BatchNorm2d)
        assert isinstance(b.conv2, nn.Conv2d) and isinstance(b.bn2, nn.BatchNorm2d)
    shortcuts = [type(b.shortcut).__name__ for b in blocks]
    assert shortcuts.count("ShortcutA") == 2 and shortcuts.count("Identity") == 7
    r18 = _build("resnet18", SHAPES[1])
    proj = [b.shortcut for b in r18.modules() if isinstance(b, BasicBlock) and isinstance(b.shortcut, nn.Sequential)]
    assert len(proj) == 3 and all(isinstance(p[0], nn.Conv2d) and p[0].kernel_size == (1, 1) for p in proj)
    assert isinstance(r18.conv1, nn.Conv2d) and r18.conv1.kernel_size == (3, 3) and r18.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in r18.modules())


def test_shortcut_a_known_answer():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    out = ShortcutA(2, 4, stride=2)(x)
    assert out.shape == (1, 4, 2, 2)
    assert torch.equal(out[0, 0], torch.zeros(2, 2)) and torch.equal(out[0, 3], torch.zeros(2, 2))
    assert torch.equal(out[0, 1], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))
    assert torch.equal(out[0, 2], torch.tensor([[16.0, 18.0], [24.0, 26.0]]))
    odd = ShortcutA(3, 6, stride=2)(torch.ones(1, 3, 5, 5))
    assert odd.shape == (1, 6, 3, 3)  # ceil(5 / 2), like the strided 3x3 conv
    assert odd[0, :, 0, 0].tolist() == [0, 1, 1, 1, 0, 0]


def test_basic_block_residual_identity():
    """With conv2's BN zeroed, an identity block computes relu(x)."""
    b = BasicBlock(4, 4, 1, "A")
    nn.init.zeros_(b.bn2.weight)
    b.eval()
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(b(x), torch.relu(x))


def test_width_and_depth_params():
    r = _build("resnet20", SHAPES[1], width=2.0, depth=44)
    assert r.conv1.out_channels == 32 and r.fc.in_features == 128 and len(r.layer1) == 7
    v = _build("vgg_small", SHAPES[1], width=0.5)
    assert v.conv0.out_channels == 64 and v.fc.in_features == 256 * 4 * 4
    r18 = _build("resnet18", SHAPES[0], width=0.25)
    assert r18.fc.in_features == 128
    with pytest.raises(ValueError, match="6n \\+ 2"):
        _build("resnet20", SHAPES[1], depth=21)
    with pytest.raises(ConfigError, match=r"model\.depth: must be 6n \+ 2"):
        component(MODELS, {"name": "resnet20", "depth": 22}, "model")
    with pytest.raises(ConfigError, match=r"model\.width"):
        component(MODELS, {"name": "vgg_small", "width": 0}, "model")


def test_vgg_small_small_inputs():
    v8 = _build("vgg_small", SHAPES[0])
    assert v8.fc.in_features == 512  # 8 -> 4 -> 2 -> 1
    v2 = _build("vgg_small", (2, 1, 2, 2))
    assert isinstance(v2.pool1, nn.MaxPool2d) and isinstance(v2.pool3, nn.Identity)
    assert v2(torch.rand(2, 1, 2, 2)).shape == (2, 10)
    assert _build("resnet20", (2, 1, 1, 1))(torch.rand(2, 1, 1, 1)).shape == (2, 10)


def test_kaiming_init_scale():
    v = _build("vgg_small", SHAPES[1])
    w = v.conv4.weight  # 512 x 256 x 3 x 3
    want = math.sqrt(2.0 / (512 * 9))
    assert abs(float(w.detach().std()) / want - 1) < 0.02
    assert torch.equal(v.bn4.weight, torch.ones(512)) and torch.equal(v.bn4.bias, torch.zeros(512))
