"""FT-ClipAct on arbitrary networks: one threshold per activation call site (a module called
twice, functional / method / in-place calls, other activation kinds), the fallback with a
warning when a forward cannot be traced, and thresholds surviving deepcopy and checkpoints."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import byo_nets
from sturdynet.core.params import Component
from sturdynet.core.registry import METHODS
from sturdynet.data.base import Split
from sturdynet.defenses.clipact import ActivationClip, ClipAct, ClippedReLU, profile_max
from sturdynet.defenses.clipact_coverage import clip_coverage
from sturdynet.models.arch import arch_of
from sturdynet.models.spec import parse_model_spec
from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint

INF = float("inf")


class Twice(nn.Module):
    """One nn.ReLU module called at two sites."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.relu(x) * self.scale - 5)


class Functional(nn.Module):
    """F.relu, torch.relu, x.relu(), in-place F.relu_, an nn.ReLU module, F.gelu and a sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.act = nn.ReLU()

    def forward(self, x):
        a = F.relu(x * self.w)
        b = torch.relu(a - 1)
        c = (b * 2).relu()
        d = c - 0.5
        F.relu_(d)  # in place: d is read afterwards
        return self.act(d) + F.gelu(x) + 0 * torch.sigmoid(x)


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.lin(x))
        if y.sum() > 0:
            y = self.relu(y * 2)
        return F.relu(y - 1)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Branchy()
        self.head = nn.Linear(3, 2)
        self.relu6 = nn.ReLU6()

    def forward(self, x):
        return self.head(self.relu6(self.inner(x)))


def _set(model, **thr):
    for name, t in thr.items():
        model.get_submodule(name).threshold.fill_(t)


def test_one_relu_module_called_twice_gets_two_thresholds():
    m, x = Twice(), torch.tensor([[1.0, -2.0, 3.0]])
    clipped, report = ClipAct.clip(m)
    assert list(report["sites"]) == ["relu", "relu@1"]
    assert isinstance(clipped.get_submodule("relu"), ClippedReLU) and isinstance(clipped.get_submodule("relu@1"),
                                                                                ClippedReLU)
    assert torch.equal(clipped(x), m(x))
    # first site: max(relu(x)) = 3; second: max(relu(10 * [1, 0, 3] - 5)) = 25
    assert profile_max(clipped, Split(x, torch.zeros(1, dtype=torch.long))) == {"relu": 3.0, "relu@1": 25.0}
    clipped.get_submodule("relu").threshold.fill_(2.0)  # the 3 is a fault: a = [1, 0, 0]
    assert clipped(x).tolist() == [[5.0, 0.0, 0.0]]
    clipped.get_submodule("relu").threshold.fill_(INF)
    clipped.get_submodule("relu@1").threshold.fill_(20.0)  # 25 zeroed, 5 kept
    assert clipped(x).tolist() == [[5.0, 0.0, 0.0]]
    clipped.get_submodule("relu@1").threshold.fill_(4.0)
    assert clipped(x).tolist() == [[0.0, 0.0, 0.0]]
    assert set(m.state_dict()) < set(clipped.state_dict())  # original keys kept


def test_functional_method_and_inplace_calls_are_all_clipped():
    m, x = Functional(), torch.tensor([[3.0, 0.5, -1.0]])
    clipped, report = ClipAct.clip(m)
    assert report["sites"] == {"relu_fn@0": "relu", "relu_fn@1": "relu", "relu_fn@2": "relu", "relu_fn@3": "relu",
                               "act": "relu", "gelu_fn@0": "gelu"}
    assert report["left_alone"] == {"sigmoid": 1} and report["traced"]
    assert torch.equal(clipped(x), m(x))  # thresholds inf: the original function
    g = F.gelu(x)
    # a = [3, .5, 0], b = [2, 0, 0], c = [4, 0, 0], d = [3.5, 0, 0]
    assert torch.allclose(clipped(x), torch.tensor([[3.5, 0.0, 0.0]]) + g)
    _set(clipped, **{"relu_fn@1": 1.5})  # b's 2 is above T: zeroed, so c = 0, d = relu(-0.5) = 0
    assert torch.allclose(clipped(x), g)
    _set(clipped, **{"relu_fn@1": INF, "gelu_fn@0": 1.0})  # the pre-activation 3 of gelu is above T
    assert torch.allclose(clipped(x), torch.tensor([[3.5, 0.0, 0.0]]) + torch.tensor([[0.0, 1.0, 1.0]]) * g)
    assert isinstance(clipped.get_submodule("gelu_fn@0"), ActivationClip)
    cov = clip_coverage(clipped, report, x)
    assert cov["sites"] == 6 and cov["clipped"] == {"relu": 5, "gelu": 1}
    assert cov["shared_calls"] == 0 and cov["unclipped_calls"] == {}


def test_foreign_resnet_with_torch_relu_blocks():
    net = byo_nets.resnet_basic(width=4).eval()
    clipped, report = ClipAct.clip(net)
    # the stem's nn.ReLU + two torch.relu calls in each of the four basic blocks
    assert len(report["sites"]) == 9 and report["sites"]["stem.2"] == "relu"
    assert "layer1.0.relu_fn@1" in report["sites"]
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(clipped(x), net(x))
    assert type(clipped.layer1[0]) is byo_nets.BasicBlock  # the module tree is kept
    assert set(net.state_dict()) < set(clipped.state_dict())


def test_untraceable_forward_falls_back_with_a_warning():
    torch.manual_seed(0)
    m = Branchy()
    with torch.no_grad():
        m.lin.bias.fill_(1.0)
    clipped, report = ClipAct.clip(m)
    assert not report["traced"] and report["opaque"] == [""] and list(report["sites"]) == ["relu"]
    x = torch.rand(4, 3)
    assert torch.equal(clipped(x), m(x))
    with pytest.warns(UserWarning, match=r"the model could not be traced through .*2 activation call site\(s\) "
                                         r"could not be separated: 1 call\(s\) share.* 1 functional call"):
        cov = clip_coverage(clipped, report, x)
    assert cov["shared_calls"] == 1 and cov["unclipped_calls"] == {"relu": 1}


def test_untraceable_submodule_is_opaque_the_rest_is_traced():
    torch.manual_seed(0)
    m = Outer()
    with torch.no_grad():
        m.inner.lin.bias.fill_(1.0)
    clipped, report = ClipAct.clip(m)
    assert report["traced"] and report["opaque"] == ["inner"]
    assert report["sites"] == {"relu6@0": "relu6", "inner.relu": "relu"}
    x = torch.rand(4, 3)
    assert torch.equal(clipped(x), m(x))
    with pytest.warns(UserWarning, match=r"module\(s\) 'inner' could not be traced through \(TraceError"):
        clip_coverage(clipped, report, x)
    c2, r2 = ClipAct.clip(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.SiLU()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every call is separated
        cov = clip_coverage(c2, r2, x)
    assert cov["clipped"] == {"relu": 1, "silu": 1} and cov["warning"] is None


def test_relu6_clip_zeroes_instead_of_saturating():
    m = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU6())
    with torch.no_grad():
        m[0].weight.fill_(1.0)
    clipped, report = ClipAct.clip(m)
    assert report["sites"] == {"1@0": "relu6"}
    x = torch.tensor([[-1.0], [2.0], [5.0], [7.0], [1e30]])
    assert clipped(x).flatten().tolist() == [0.0, 2.0, 5.0, 6.0, 6.0]
    _set(clipped, **{"1@0": 4.0})
    assert clipped(x).flatten().tolist() == [0.0, 2.0, 0.0, 0.0, 0.0]


def test_no_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="no activation to clip.*bounded activations found: sigmoid"):
        ClipAct.clip(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()))


def test_thresholds_survive_deepcopy_and_checkpoint(tmp_path, digits):
    torch.manual_seed(0)
    net = byo_nets.resnet_basic(width=4)
    step = Component("faults.clipact", METHODS.validate("faults.clipact", {}, "faults.clipact"))
    clipped = METHODS.get("faults.clipact")().prepare(net, step.params).eval()
    sites = [n for n, mod in clipped.named_modules() if isinstance(mod, (ClippedReLU, ActivationClip))]
    for i, n in enumerate(sites):
        clipped.get_submodule(n).threshold.fill_(0.5 + 0.25 * i)
    x = digits.test.x[:8]
    dup = copy.deepcopy(clipped)
    assert type(dup.layer2[1]) is byo_nets.BasicBlock and dup.layer2[1] is not clipped.layer2[1]
    assert torch.equal(dup(x), clipped(x))
    spec = parse_model_spec({"factory": "byo_nets:resnet_basic", "kwargs": {"width": 4}})
    path = tmp_path / "clip.safetensors"
    save_checkpoint(path, clipped, arch_of(spec, digits, [step]))
    loaded, _ = load_checkpoint(path, trusted_factory="byo_nets:resnet_basic")
    assert [float(loaded.get_submodule(n).threshold) for n in sites] == [0.5 + 0.25 * i for i in range(len(sites))]
    assert torch.equal(loaded(x), clipped(x))
    assert not math.isinf(float(loaded.get_submodule("layer1.0.relu_fn@1").threshold))


class Bottleneck(nn.Module):
    """torchvision's Bottleneck layout: one nn.ReLU(inplace=True) called three times, ``out += identity``."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def test_torchvision_style_bottleneck_gets_three_sites():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Bottleneck(), Bottleneck(), nn.Flatten(),
                        nn.Linear(256, 3)).eval()
    clipped, report = ClipAct.clip(net)
    assert [n for n in report["sites"] if n.startswith("1.")] == ["1.relu", "1.relu@1", "1.relu@2"]
    assert len(report["sites"]) == 6
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(clipped(x), net(x))
    sites = profile_max(clipped, Split(x, torch.zeros(2, dtype=torch.long)))
    assert len(set(sites.values())) == 6  # each site is profiled on its own activations


def test_apply_reports_coverage_per_site(digits):
    torch.manual_seed(0)
    params = METHODS.validate("faults.clipact", {"trials": 1, "iterations": 1, "min_iterations": 1, "samples": 40,
                                                 "rates": [1e-5]}, "faults.clipact")
    from sturdynet.core.method import MethodContext

    ctx = MethodContext(data=digits, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything separated: no warning
        clipped = ClipAct().apply(byo_nets.resnet_basic(width=4), params, ctx)
    log = ctx.log["clipact"]
    assert log["coverage"]["sites"] == 9 and log["coverage"]["clipped"] == {"relu": 9}
    assert log["coverage"]["shared_calls"] == 0 and log["coverage"]["unclipped_calls"] == {}
    assert set(log["thresholds"]) == set(log["act_max"]) and len(log["thresholds"]) == 9
    assert all(0 <= log["thresholds"][n] <= log["act_max"][n] for n in log["thresholds"])
    assert all(float(clipped.get_submodule(n).threshold) == t for n, t in log["thresholds"].items())


def test_checkpoint_from_before_per_site_clipping_loads_with_its_function():
    from sturdynet.defenses.clipact import replace_relus

    torch.manual_seed(0)
    old = copy.deepcopy(Twice())
    replace_relus(old)  # the former structure: one ClippedReLU for both calls, functional calls unclipped
    old.relu.threshold.fill_(2.0)
    new, _ = ClipAct.clip(Twice())
    with pytest.warns(UserWarning, match="older checkpoint"):
        new.load_state_dict(old.state_dict(), strict=True)
    assert float(new.get_submodule("relu@1").threshold) == 2.0
    x = torch.tensor([[1.0, -2.0, 3.0], [0.3, 0.6, 0.1]])
    assert torch.equal(new(x), old(x))
    dup, _ = ClipAct.clip(Twice())
    dup = copy.deepcopy(dup)  # the hook survives deepcopy
    with pytest.warns(UserWarning, match="older checkpoint"):
        dup.load_state_dict(old.state_dict(), strict=True)
    assert torch.equal(dup(x), old(x))
    with pytest.raises(RuntimeError, match="Missing key"):  # a state_dict without thresholds stays strict
        new.load_state_dict(Twice().state_dict(), strict=True)


def test_forward_hooks_are_kept():
    torch.manual_seed(0)
    net = byo_nets.resnet_basic(width=4).eval()
    seen = []
    net.layer1[0].register_forward_hook(lambda m, i, o: seen.append("block"))
    net.register_forward_hook(lambda m, i, o: seen.append("root"))
    clipped, report = ClipAct.clip(net)
    assert report["opaque"] == ["layer1.0"] and len(report["sites"]) == 7  # the hooked block is kept whole
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(clipped(x), net(x)) and seen == ["block", "root"] * 2
    copy.deepcopy(clipped)(x)
    assert seen == ["block", "root"] * 3
    with pytest.warns(UserWarning, match=r"module\(s\) 'layer1.0' could not be traced through \('layer1.0' has "
                                         r"forward hooks\).*2 functional call\(s\) are not clipped"):
        clip_coverage(clipped, report, x)
