"""The attack checks: metrics contract, eps curves, transfer, C&W radii, the robust ensemble."""
from __future__ import annotations

import copy

import pytest
import torch

from sturdynet.core.params import ConfigError, from_dict
from sturdynet.checks import CheckContext
from sturdynet.run.recipe import parse_recipe
from sturdynet.core.registry import CHECKS

FAST = {
    "fgsm": {},
    "pgd": {"steps": 3},
    "apgd": {"steps": 5},
    "square": {"n_queries": 30},
    "cw": {"steps": 10, "binary_steps": 2, "eps": [0.5, 1.0]},
    "fab": {"steps": 5},
    "transfer": {"steps": 3},
    "robust": {"steps": 4, "n_target_classes": 2, "n_queries": 20},
}


def run(name, model, data, ctx=None, **params):
    p = from_dict(CHECKS.params(name), {**FAST[name], "samples": 60, **params})
    return CHECKS.get(name)(model, data, p, ctx or CheckContext(models={"dense": model}))


@pytest.mark.parametrize("name", sorted(FAST))
def test_metrics_contract(name, trained_cnn, digits):
    eps = [0.5, 1.0] if name == "cw" else [0.05, 0.2]
    m = run(name, trained_cnn, digits, eps=eps)
    assert 0 <= m["accuracy"] <= m["clean_accuracy"] <= 1
    assert len(m["per_sample"]) == 60 and set(m["per_sample"]) <= {0, 1}
    assert m["accuracy"] == pytest.approx(sum(m["per_sample"]) / 60)
    assert [p["eps"] for p in m["curve"]] == eps and m["eps"] == eps[0]
    assert m["curve"][0]["accuracy"] == pytest.approx(m["accuracy"])
    assert m["curve"][1]["accuracy"] <= m["curve"][0]["accuracy"] + 0.02
    assert isinstance(m["flags"], list) and all(isinstance(f, str) for f in m["flags"])
    assert list(m["curve"][0])[0] == "eps"  # the report reads the first key as the x axis


@pytest.mark.parametrize("name", sorted(FAST))
def test_recipe_accepts_check_with_eps_list(name):
    r = parse_recipe({"data": {"name": "digits"}, "model": {"name": "mlp"}, "variants": [{"name": "dense"}],
                      "evaluate": [{"check": name, "eps": [0.1, 0.2]}]})
    assert r.evaluate[0].check.params.eps == (0.1, 0.2)


def test_bad_params_name_the_field():
    with pytest.raises(ConfigError, match="steps"):
        from_dict(CHECKS.params("pgd"), {"steps": 0})
    with pytest.raises(ConfigError, match="attacks"):
        from_dict(CHECKS.params("robust"), {"attacks": ["apgd-ce", "nope"]})
    with pytest.raises(ConfigError, match="norm"):
        from_dict(CHECKS.params("cw"), {"norm": "linf"})


def test_float_model_uses_true_gradients(trained_cnn, digits):
    m = run("pgd", trained_cnn, digits, eps=0.1)
    assert m["grad_mode"] == "true" and m["zero_grad_fraction"] == 0.0 and m["flags"] == []


def test_cw_radii_from_one_run(trained_cnn, digits):
    # lr 0.1: digits are mostly exact 0 pixels, which sit deep in C&W's tanh space
    m = run("cw", trained_cnn, digits, eps=[0.0, 0.5, 1.0, 100.0], steps=60, binary_steps=5, c_init=0.1, lr=0.1)
    accs = [p["accuracy"] for p in m["curve"]]
    assert accs[0] == pytest.approx(m["clean_accuracy"])
    assert accs == sorted(accs, reverse=True)
    assert accs[-1] == 0.0 and m["found_fraction"] == 1.0 and m["median_l2"] > 0


def test_transfer_check(trained_cnn, digits):
    other = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = CheckContext(models={"dense": trained_cnn, "noisy": other})
    m = run("transfer", trained_cnn, digits, ctx=ctx, eps=0.2, surrogate="noisy")
    assert m["surrogate"] == "noisy" and not m["same_model"]
    white = run("transfer", trained_cnn, digits, ctx=ctx, eps=0.2)
    assert white["same_model"] and white["accuracy"] == pytest.approx(white["surrogate_robust_accuracy"])
    assert white["accuracy"] <= m["accuracy"] + 1e-9  # white-box is at least as strong here
    with pytest.raises(ValueError, match="surrogate variant 'nope'"):
        run("transfer", trained_cnn, digits, ctx=ctx, surrogate="nope")


def test_robust_cascade_and_independent(trained_cnn, digits):
    cas = run("robust", trained_cnn, digits, eps=0.1)
    ind = run("robust", trained_cnn, digits, eps=0.1, cascade=False)
    assert cas["per_attack_scope"] == "cumulative" and ind["per_attack_scope"] == "own"
    assert list(cas["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]  # float model: true gradients only
    accs = [v["accuracy"] for v in cas["per_attack"].values()]
    assert accs == sorted(accs, reverse=True) and accs[-1] == pytest.approx(cas["accuracy"])
    for v in ind["per_attack"].values():  # worst case is below each attack's own accuracy
        assert ind["accuracy"] <= v["accuracy"] + 1e-9
    assert ind["per_attack"]["apgd-ce"]["attacked"] == round(ind["clean_accuracy"] * 60)
    assert cas["per_attack"]["square"]["attacked"] <= cas["per_attack"]["apgd-ce"]["attacked"]


def test_robust_uses_ste_only_on_models_with_estimators(trained_cnn, digits):
    from sturdynet.core.method import MethodContext, run_steps
    from sturdynet.core.params import component
    from sturdynet.core.registry import METHODS

    step = component(METHODS, {"method": "quant.uniform", "bits": 8}, "variant", key="method")
    q = run_steps(trained_cnn, [step], MethodContext(data=digits, seed=0))
    m = run("robust", q, digits, eps=0.1)
    assert list(m["per_attack"]) == ["apgd-ce:true", "apgd-t:true", "fab-t:true", "apgd-ce:ste", "apgd-t:ste",
                                     "fab-t:ste", "square"]
    # int8 weights only: inputs flow through float activations, so true gradients are not zero
    assert m["zero_grad_fraction"] == 0.0
    assert not any(f.startswith("true_weaker_than_ste") for f in m["flags"])
