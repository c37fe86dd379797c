"""Gradient masking on sign-activation networks: true gradients lie, STE and Square do not."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sturdynet.attacks import create_attack
from sturdynet.core.params import from_dict
from sturdynet.checks import CheckContext
from sturdynet.checks.masking import curve_flags, forward_is_random, zero_gradient_fraction
from sturdynet.models import Normalize
from sturdynet.quant.grad_mode import gradient_mode
from sturdynet.quant.base import Quantizer
from sturdynet.core.registry import CHECKS, METHODS


class SignAct(Quantizer):
    """sign(x) in forward; clipped identity (hard tanh) as the straight-through surrogate."""

    bits = 1

    def quantize(self, x):
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    def surrogate(self, x):
        return x.clamp(-1, 1)


@pytest.fixture(scope="module")
def sign_net(digits, fit_on_digits):
    torch.manual_seed(0)
    h = 128
    model = nn.Sequential(Normalize(digits.mean, digits.std), nn.Flatten(), nn.Linear(64, h), nn.BatchNorm1d(h),
                          SignAct(), nn.Linear(h, h), nn.BatchNorm1d(h), SignAct(), nn.Linear(h, 10))
    return fit_on_digits(model, 12)


def robust(model, adv, y, clean):
    with torch.no_grad():
        return float(((model(adv).argmax(1) == y) & clean).float().mean())


def test_true_gradients_are_zero(sign_net):
    model, x, y, _ = sign_net
    frac, elems = zero_gradient_fraction(model, x[:100], y[:100], "true")
    assert frac == 1.0 and elems == 1.0
    frac_ste, _ = zero_gradient_fraction(model, x[:100], y[:100], "ste")
    assert frac_ste == 0.0
    assert all(m.grad_mode == "ste" for m in model.modules() if isinstance(m, SignAct))  # restored


def test_true_pgd_high_ste_and_square_near_zero(sign_net):
    model, x, y, clean = sign_net
    eps = 0.3
    true = robust(model, create_attack("pgd", model, eps=eps, steps=10, grad_mode="true")(x, y), y, clean)
    ste = robust(model, create_attack("pgd", model, eps=eps, steps=10, grad_mode="ste")(x, y), y, clean)
    square = robust(model, create_attack("square", model, eps=eps, n_queries=300)(x, y), y, clean)
    assert true > 0.8, true
    assert ste < 0.05, ste
    assert square < 0.05, square
    assert all(m.grad_mode == "ste" for m in model.modules() if isinstance(m, SignAct))  # restored
    with gradient_mode(model, "true"):  # an attack without grad_mode leaves the model's own setting
        create_attack("pgd", model, eps=eps, steps=2, grad_mode="ste")(x[:8], y[:8])
        assert all(m.grad_mode == "true" for m in model.modules() if isinstance(m, SignAct))


def test_grad_mode_does_not_change_forward(sign_net):
    model, x, _, _ = sign_net
    with torch.no_grad():
        a = model(x[:50])
        with gradient_mode(model, "true"):
            b = model(x[:50])
    assert torch.equal(a, b)


def test_robust_check_flags_masking(sign_net, digits):
    model, *_ = sign_net
    p = from_dict(CHECKS.params("robust"), {"eps": 0.3, "steps": 10, "n_target_classes": 2, "n_queries": 200,
                                             "samples": 200})
    m = CHECKS.get("robust")(model, digits, p, CheckContext())
    codes = {f.split(":")[0] for f in m["flags"]}
    assert {"zero_gradients", "true_weaker_than_ste"} <= codes, m["flags"]
    assert all("gradient masking" in f for f in m["flags"] if f.split(":")[0] in codes)
    per = m["per_attack"]
    assert list(per) == ["apgd-ce:true", "apgd-t:true", "fab-t:true", "apgd-ce:ste", "apgd-t:ste", "fab-t:ste",
                         "square"]  # the standard budget's members, in each gradient mode
    assert m["budget"] == "custom" and m["budget_detail"]["steps"] == 10
    assert per["apgd-t:true"]["accuracy"] > 0.8  # true gradients alone: falsely robust
    assert m["accuracy"] < 0.05 and m["ste_only"] > 0.7
    assert m["zero_grad_fraction"] == 1.0
    assert len(m["per_sample"]) == 200


def test_pgd_check_with_true_gradients_flags(sign_net, digits):
    model, *_ = sign_net
    p = from_dict(CHECKS.params("pgd"), {"eps": [0.1, 0.3], "steps": 5, "grad_mode": "true", "samples": 100})
    m = CHECKS.get("pgd")(model, digits, p, CheckContext())
    assert m["grad_mode"] == "true" and m["accuracy"] > 0.8
    assert any(f.startswith("zero_gradients:") and "overstated" in f for f in m["flags"])
    # a later Square check at the same eps sees the earlier gradient check and flags it
    ps = from_dict(CHECKS.params("square"), {"eps": 0.1, "n_queries": 300, "samples": 100})
    sq = CHECKS.get("square")(model, digits, ps, CheckContext(results={"pgd": m}))
    assert any(f.startswith("gradient_free_stronger:") for f in sq["flags"]), sq["flags"]


def test_forward_randomness_flag():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x):
            return self.lin(x.flatten(1) + 0.1 * torch.randn_like(x.flatten(1)))

    x = torch.rand(8, 1, 8, 8)
    assert forward_is_random(Noisy(), x)
    assert not forward_is_random(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x)


def test_curve_flags_known_answers():
    up = [{"eps": 0.1, "accuracy": 0.5}, {"eps": 0.2, "accuracy": 0.6}]
    assert [f.split(":")[0] for f in curve_flags(up, 0.02)] == ["eps_not_monotone", "eps_flat"]
    flat = [{"eps": 0.1, "accuracy": 0.9}, {"eps": 0.3, "accuracy": 0.895}]
    assert [f.split(":")[0] for f in curve_flags(flat, 0.02)] == ["eps_flat"]
    ok = [{"eps": 0.1, "accuracy": 0.9}, {"eps": 0.3, "accuracy": 0.2}]
    assert curve_flags(ok, 0.02) == []


@pytest.mark.skipif("binarize" not in METHODS, reason="the binarize method is not available")
def test_binarize_variant_in_a_recipe(tmp_path):
    """End to end: a recipe with a binarize variant shows the masking in results.json."""
    from sturdynet.run.recipe import parse_recipe
    from sturdynet.run.runner import run_recipe

    recipe = {
        "name": "masking", "seed": 0,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [128, 128]},
        "train": {"epochs": 8, "batch_size": 64, "lr": 0.05},
        "variants": [{"name": "dense"}, {"name": "binary", "method": "binarize", "epochs": 8}],
        "evaluate": [
            {"check": "clean"},
            {"check": "pgd", "id": "pgd-true", "eps": 0.3, "steps": 10, "grad_mode": "true", "samples": 150},
            {"check": "pgd", "id": "pgd-ste", "eps": 0.3, "steps": 10, "grad_mode": "ste", "samples": 150},
            {"check": "square", "eps": 0.3, "n_queries": 300, "samples": 150},
            {"check": "robust", "eps": 0.3, "steps": 10, "n_target_classes": 2, "n_queries": 200, "samples": 150},
        ],
    }
    res = run_recipe(parse_recipe(recipe), tmp_path)
    binary = {v["name"]: v for v in res["variants"]}["binary"]
    assert binary["status"] == "ok", binary.get("error")
    m = binary["metrics"]
    assert m["clean"]["accuracy"] > 0.8
    assert m["pgd-true"]["accuracy"] > 0.6, m["pgd-true"]["accuracy"]
    assert m["pgd-ste"]["accuracy"] < 0.1 and m["square"]["accuracy"] < 0.1
    assert m["robust"]["accuracy"] < 0.05
    codes = {f.split(":")[0] for f in m["robust"]["flags"]}
    assert "zero_gradients" in codes and "true_weaker_than_ste" in codes
