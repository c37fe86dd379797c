"""Randomized smoothing (arXiv 1902.02918): known radii, the bounds, abstention, invariants,
the ``certify`` check through a recipe and the ``gaussian_augment`` callback."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from sturdynet.certify import ABSTAIN, SmoothedClassifier, binomial_pvalue, clopper_pearson_lower
from sturdynet.defenses.gaussian_augment import GaussianAugment
from sturdynet.core.params import ConfigError, from_dict
from sturdynet.checks import CheckContext
from sturdynet.run.recipe import parse_recipe
from sturdynet.core.registry import CALLBACKS, CHECKS
from sturdynet.train import TrainConfig, TrainState, fit

SIGMA = 0.25


class TwoClassLinear(nn.Module):
    """f(x) = argmax(w.x + b, -(w.x + b)) on flattened images."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([z, -z], 1)


@pytest.fixture(scope="module")
def linear():
    """A linear model through the cube's centre and points at signed distances t along its normal."""
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    centre = torch.full((16,), 0.5)
    model = TwoClassLinear(w, -float(w @ centre))
    t = torch.tensor([0.05, 0.125, 0.25, 0.4, -0.125])
    x = (centre + t[:, None] * w / w.norm()).reshape(-1, 1, 4, 4)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    return model, x, t


def test_radius_is_the_distance_to_the_boundary(linear):
    model, x, t = linear
    cert = SmoothedClassifier(model, SIGMA, batch_size=10000, seed=0).certify(x, n0=100, n=20000, alpha=0.001)
    dist = t.abs().double()
    assert cert.prediction.tolist() == [0, 0, 0, 0, 1]
    assert bool((cert.radius <= dist).all()), (cert.radius, dist)  # sound (probability >= 1 - alpha)
    assert bool((cert.radius >= 0.85 * dist).all()), (cert.radius, dist)  # and tight at n = 20000
    assert float(cert.radius[1]) == pytest.approx(0.125, rel=0.10)  # distance 0.5 sigma
    # the counts estimate pA = Phi(|t| / sigma)
    pa = cert.counts.max(1).values.double() / 20000
    assert torch.allclose(pa, torch.from_numpy(stats.norm.cdf(dist.numpy() / SIGMA)), atol=0.012)


def test_constant_model_reaches_the_largest_radius():
    model = TwoClassLinear(torch.zeros(16), 1.0)  # always class 0
    cert = SmoothedClassifier(model, SIGMA).certify(torch.rand(3, 1, 4, 4), n0=10, n=1000, alpha=0.001)
    # every sample votes for class 0: pA_lower = alpha ** (1 / n), radius sigma * Phi^-1 of it
    assert torch.allclose(cert.pa_lower, torch.full((3,), 0.001 ** (1 / 1000), dtype=torch.float64))
    assert cert.radius.tolist() == pytest.approx([0.25 * 2.463263] * 3, rel=1e-6)  # Phi^-1(0.993116)


def test_clopper_pearson_known_values():
    # the textbook exact 95% interval for 5 / 10 is [0.1871, 0.8129]: its lower end is the 97.5% one-sided bound
    assert float(clopper_pearson_lower(5, 10, 0.025)) == pytest.approx(0.187086, abs=1e-6)
    assert float(clopper_pearson_lower(1, 1, 0.01)) == pytest.approx(0.01)
    assert float(clopper_pearson_lower(0, 50, 0.001)) == 0.0
    assert float(clopper_pearson_lower(100, 100, 0.001)) == pytest.approx(0.001 ** 0.01, rel=1e-12)
    k, n, alpha = np.array([1, 37, 500, 990, 9999]), np.array([3, 100, 1000, 1000, 10000]), 0.001
    lower = clopper_pearson_lower(k, n, alpha)
    assert np.allclose(lower, stats.beta.ppf(alpha, k, n - k + 1), rtol=1e-12)
    # the defining equation: P(Binomial(n, lower) >= k) = alpha
    assert np.allclose(stats.binom.sf(k - 1, n, lower), alpha, rtol=1e-6)
    assert np.all(lower < k / n)


def test_binomial_pvalue_matches_scipy():
    for k, n in [(10, 10), (7, 10), (3, 10), (50, 100), (60, 100), (520, 1000), (0, 5)]:
        assert float(binomial_pvalue(k, n)) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-9), (k, n)


@pytest.mark.parametrize("call", [
    lambda: clopper_pearson_lower(3, 2, 0.01), lambda: clopper_pearson_lower(1, 0, 0.01),
    lambda: clopper_pearson_lower(1, 2, 1.0), lambda: binomial_pvalue(-1, 4)])
def test_bound_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_abstains_on_the_decision_boundary(linear):
    model, x, t = linear
    centre = torch.full((1, 1, 4, 4), 0.5)  # w.x + b = 0: the votes split about 50/50
    smoothed = SmoothedClassifier(model, SIGMA, seed=1)
    cert = smoothed.certify(centre, n0=100, n=2000, alpha=0.001)
    assert cert.prediction.tolist() == [ABSTAIN] and cert.radius.tolist() == [0.0]
    assert 0.4 < float(cert.counts[0, 0]) / 2000 < 0.6 and float(cert.pa_lower[0]) <= 0.5
    assert smoothed.predict(centre, n=2000, alpha=0.001).tolist() == [ABSTAIN]
    # away from the boundary PREDICT answers
    assert smoothed.predict(x[[2, 3, 4]], n=1000, alpha=0.001).tolist() == [0, 0, 1]


def test_inputs_in_one_batch_keep_their_own_counts():
    model = TwoClassLinear(torch.ones(16), -8.0)  # class 0 iff the mean pixel > 0.5
    x = torch.stack([torch.full((1, 4, 4), 0.9), torch.full((1, 4, 4), 0.1)])
    counts = SmoothedClassifier(model, 0.01, batch_size=7).sample_counts(x, 50)
    assert counts.tolist() == [[50, 0], [0, 50]]


def test_deterministic_and_leaves_model_and_inputs_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 3))
    model.train()  # dropout would make repeated runs differ if the sampler did not switch to eval
    weights = copy.deepcopy(model.state_dict())
    x = torch.rand(4, 1, 4, 4)
    x_before = x.clone()
    a = SmoothedClassifier(model, SIGMA, batch_size=64, seed=3).certify(x, n0=20, n=200, alpha=0.01)
    b = SmoothedClassifier(model, SIGMA, batch_size=64, seed=3).certify(x, n0=20, n=200, alpha=0.01)
    c = SmoothedClassifier(model, SIGMA, batch_size=64, seed=4).certify(x, n0=20, n=200, alpha=0.01)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.radius, b.radius)
    assert torch.equal(a.prediction, b.prediction)
    assert not torch.equal(a.counts, c.counts)
    assert model.training and torch.equal(x, x_before)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert a.counts.sum(1).tolist() == [200] * 4


@pytest.mark.parametrize("kwargs, call, match", [
    ({"sigma": 0.0}, None, "sigma"), ({"sigma": float("nan")}, None, "sigma"),
    ({"batch_size": 0}, None, "batch_size"),
    ({}, lambda g: g.certify(torch.rand(1, 4, 4), 10, 10, 0.01), "shape"),
    ({}, lambda g: g.certify(torch.rand(1, 1, 4, 4) + 1, 10, 10, 0.01), r"\[0, 1\]"),
    ({}, lambda g: g.certify(torch.rand(1, 1, 4, 4), 0, 10, 0.01), "n0"),
    ({}, lambda g: g.certify(torch.rand(1, 1, 4, 4), 10, 10, 1.0), "alpha"),
    ({}, lambda g: g.predict(torch.rand(1, 1, 4, 4), 0, 0.01), "num"),
])
def test_smoothed_classifier_bad_input(kwargs, call, match):
    model = TwoClassLinear(torch.ones(16), 0.0)
    with pytest.raises(ValueError, match=match):
        smoothed = SmoothedClassifier(model, **{"sigma": SIGMA, **kwargs})
        call(smoothed)


@pytest.mark.parametrize("params, field", [
    ({"sigma": 0}, "sigma"), ({"sigma": [0.25, -0.5]}, r"^sigma: must be > 0, got -0.5"), ({"sigma": []}, "sigma"),
    ({"n0": 0}, "n0"), ({"n": 0}, "^n:"), ({"alpha": 0}, "alpha"), ({"alpha": 1}, "alpha"),
    ({"radii": [0.5, -1]}, r"^radii: must be >= 0"), ({"samples": 0}, "samples"), ({"sigmas": 0.1}, "sigmas"),
])
def test_check_bad_params_name_the_field(params, field):
    with pytest.raises(ConfigError, match=field) as err:
        from_dict(CHECKS.params("certify"), params)
    assert "\n" not in str(err.value)


def test_recipe_errors_name_the_path():
    base = {"data": {"name": "digits"}, "model": {"name": "mlp"}, "variants": [{"name": "dense"}]}
    with pytest.raises(ConfigError, match=r"^evaluate\[0\]\.alpha: must be in \(0, 1\)"):
        parse_recipe({**base, "evaluate": [{"check": "certify", "alpha": 1.5}]})
    with pytest.raises(ConfigError, match=r"^train\.callbacks\[0\]\.sigma: must be > 0"):
        parse_recipe({**base, "train": {"callbacks": [{"name": "gaussian_augment", "sigma": 0}]}})
    r = parse_recipe({**base, "evaluate": [{"check": "certify", "sigma": [0.12, 0.25]}]})
    assert r.evaluate[0].check.params.sigma == (0.12, 0.25)


def test_check_metrics(trained_cnn, digits):
    params = from_dict(CHECKS.params("certify"), {"sigma": [0.12, 0.25], "n0": 20, "n": 200, "samples": 40,
                                                  "radii": [0.25, 0.1]})
    m = CHECKS.get("certify")(trained_cnn, digits, params, CheckContext(seed=0))
    assert m["kind"] == "certified" and m["sigma"] == 0.12 and len(m["per_sample"]) == 40
    assert m["accuracy"] == pytest.approx(sum(m["per_sample"]) / 40)
    assert [p["radius"] for p in m["curve"]] == [0.0, 0.1, 0.25] and list(m["curve"][0])[0] == "radius"
    accs = [p["accuracy"] for p in m["curve"]]
    assert accs[0] == pytest.approx(m["accuracy"]) and accs == sorted(accs, reverse=True)
    assert accs[0] + m["abstain_rate"] <= 1 + 1e-9 and m["accuracy"] <= m["clean_accuracy"] + 0.1
    assert [b["sigma"] for b in m["per_sigma"]] == [0.12, 0.25] and m["per_sigma"][0]["curve"] == m["curve"]
    assert 0 < m["mean_radius"] <= 0.12 * stats.norm.ppf(0.01 ** (1 / 200)) + 1e-9
    again = CHECKS.get("certify")(trained_cnn, digits, params, CheckContext(seed=0))
    assert again["per_sigma"] == m["per_sigma"]


def test_check_through_a_recipe_and_the_report(tmp_path):
    from sturdynet.report import render_report
    from sturdynet.run.runner import run_recipe
    from sturdynet.run.store import decode_bits

    recipe = {
        "name": "certify-tiny", "seed": 0,
        "data": {"name": "digits", "subset": {"train": 400, "test": 60}},
        "model": {"name": "small_cnn", "width": 4},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "callbacks": [{"name": "gaussian_augment", "sigma": 0.25}]},
        "variants": [{"name": "dense"}, {"name": "int4", "method": "quant.uniform", "bits": 4}],
        "evaluate": [{"check": "clean"}, {"check": "pgd", "eps": 0.1, "steps": 2, "samples": 20},
                     {"check": "certify", "sigma": [0.25, 0.5], "n0": 10, "n": 100, "samples": 30}],
    }
    res = run_recipe(parse_recipe(recipe), tmp_path)
    for v in res["variants"]:
        assert v["status"] == "ok", v
        m = v["metrics"]["certify"]
        assert m["kind"] == "certified" and len(decode_bits(m["per_sample"])) == 30
        assert [p["radius"] for p in m["curve"]] == [0.0, 0.25, 0.5, 0.75, 1.0] and len(m["per_sigma"]) == 2
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Certified (smoothing)" in md and (tmp_path / "plots" / "curve_certify.png").is_file()
    # the certificate keeps its own column and stays out of the adversarial robust minimum
    assert "minimum accuracy over the input-attack checks (pgd)" in md


def _state(x: torch.Tensor, seed: int) -> TrainState:
    return TrainState(model=nn.Identity(), optimizer=None, config=None, data=None, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(seed), x=x, y=torch.zeros(len(x), dtype=torch.long))


def test_gaussian_augment_adds_noise_of_the_given_std():
    assert "gaussian_augment" in CALLBACKS
    x = torch.full((64, 1, 8, 8), 0.5)
    state = _state(x, 0)
    GaussianAugment(sigma=0.3).on_batch_begin(state)
    delta = state.x - 0.5
    assert torch.equal(x, torch.full_like(x, 0.5))  # the batch is replaced, not changed in place
    assert float(delta.std()) == pytest.approx(0.3, rel=0.05) and abs(float(delta.mean())) < 4 * 0.3 / 64
    assert float(state.x.min()) < 0  # not clamped, as in the paper
    again, other = _state(x, 0), _state(x, 1)
    GaussianAugment(sigma=0.3).on_batch_begin(again)
    GaussianAugment(sigma=0.3).on_batch_begin(other)
    assert torch.equal(again.x, state.x) and not torch.equal(other.x, state.x)
    with pytest.raises(ValueError, match="sigma"):
        GaussianAugment(sigma=-1.0)


def test_gaussian_augment_training_is_seeded(digits):
    from sturdynet.core.params import Component
    from sturdynet.models import model_for_data
    from sturdynet.models.small_cnn import SmallCNNParams

    def train(callbacks):
        torch.manual_seed(0)
        model = model_for_data(Component("small_cnn", SmallCNNParams(width=4)), digits)
        cfg = from_dict(TrainConfig, {"epochs": 1, "batch_size": 128, "callbacks": callbacks})
        fit(model, digits, cfg, seed=0)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    noisy = [{"name": "gaussian_augment", "sigma": 0.25}]
    a, b, plain = train(noisy), train(noisy), train([])
    assert torch.equal(a, b) and not torch.equal(a, plain)


def test_example_recipe_parses():
    from pathlib import Path

    from sturdynet.run.recipe import load_recipe

    r = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "certify-digits.yaml")
    assert [c.name for c in r.train.callbacks] == ["gaussian_augment"]
    pruned = next(v for v in r.variants if v.name == "pruned-80")
    assert [c.name for c in pruned.finetune.callbacks] == ["gaussian_augment"]
    assert any(c.check.name == "certify" for c in r.evaluate)
