"""Every compression method on networks sturdynet did not build (residual basic blocks, concat +
squeeze-excitation, a MobileNetV2-style net with depthwise convs behind a declared
normalization): the method runs, the result predicts, and its checkpoint structure rebuilds
from the state_dict. Methods tied to one architecture family refuse other networks with a
one-line reason (binarize.bireal, ra_bnn.grow); fine-pruning prunes their last conv through the
dependency graph (clipact clips every activation call site: functional torch.relu in resnet_basic,
ReLU6 in the MobileNet)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import byo_nets
from sturdynet.core.method import run_steps
from sturdynet.core.params import Component, component
from sturdynet.core.registry import DATASETS, METHODS
from sturdynet.models.spec import InputNormalized
from sturdynet.train import TrainConfig
from sturdynet.train.context import training_context

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "own_model"))
import net as example_net  # noqa: E402

NETS = {"resnet_basic": lambda: byo_nets.resnet_basic(width=4), "concat_se": lambda: byo_nets.concat_se(width=4),
        "mobilenet": lambda: InputNormalized(example_net.build_net(width=4), [0.3], [0.37])}
QUICK = {"imp": {"rounds": 1, "epochs": 1, "sparsity": 0.5}, "robust_ticket": {"rounds": 1, "epochs": 1, "sparsity": 0.5},
         "colt": {"epochs": 1, "final_epochs": 1}, "rigl": {"epochs": 1}, "set": {"epochs": 1},
         "hydra": {"score_epochs": 1}, "distill": {"teacher_epochs": 1, "student_epochs": 1},
         "clipact": {"trials": 1, "iterations": 1, "min_iterations": 1, "samples": 50, "rates": [1e-5]},
         "clustering": {"epochs": 1}, "fine_pruning": {"epochs": 1}, "hq": {"hs_epochs": 1}, "binarize": {}}
FAMILY_ONLY = {"binarize.bireal", "ra_bnn.grow"}
LIMITS: dict = {}  # prune.fine_pruning takes the graph engine on these nets (tests/test_fine_pruning_graph.py)
CORE = ["prune.structured", "prune.global_magnitude", "prune.lamp", "quant.uniform", "quant.fixed_point",
        "quant.ternary", "binarize"]


@pytest.fixture(scope="module")
def small_digits():
    from sturdynet.data import load_data

    return load_data(component(DATASETS, {"name": "digits", "subset": {"train": 200, "test": 40}}, "data"), 0)


def _apply(method: str, net: str, data):
    torch.manual_seed(0)
    model = NETS[net]()
    params = METHODS.validate(method, QUICK.get(method.split(".")[-1], {}), method)
    cfg = TrainConfig(epochs=1, batch_size=64)
    ctx = training_context(data, cfg, seed=0, device=torch.device("cpu"))
    step = Component(method, params)
    out = run_steps(model, [step], ctx).eval()
    assert out(data.test.x[:4]).shape == (4, 10)
    shell = run_steps(NETS[net](), [step], None, structure_only=True, state_dict=out.state_dict())
    shell.load_state_dict(out.state_dict())
    with torch.no_grad():
        assert torch.allclose(shell.eval()(data.test.x[:4]), out(data.test.x[:4]), atol=1e-5)


def _case(method: str, net: str, data):
    limit = LIMITS.get((method, net)) or LIMITS.get((method, "*"))
    if method in FAMILY_ONLY or limit:
        with pytest.raises(ValueError, match=limit or "needs"):
            _apply(method, net, data)
    else:
        _apply(method, net, data)


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("method", CORE)
def test_core_methods_on_foreign_architectures(method, net, small_digits):
    _case(method, net, small_digits)


@pytest.mark.slow
@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("method", [m for m in METHODS.names() if m not in CORE])
def test_every_method_on_foreign_architectures(method, net, small_digits):
    _case(method, net, small_digits)
