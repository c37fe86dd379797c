"""Common corruptions (arXiv 1903.12261): contract for every registered corruption, known
answers, bad input, and the ``corruptions`` check through a recipe."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sturdynet.core.params import ConfigError, from_dict
from sturdynet.corruptions import BENCHMARK, CORRUPTIONS, EXTRAS, corrupt
from sturdynet.corruptions.blur import disk_kernel
from sturdynet.checks.corruptions import corruption_generator
from sturdynet.corruptions.ops import motion_blur
from sturdynet.checks import CheckContext
from sturdynet.run.recipe import parse_recipe
from sturdynet.core.registry import CHECKS
from sturdynet.report import render_report
from sturdynet.report.view import RunView
from sturdynet.run.runner import run_recipe

NAMES = CORRUPTIONS.names()
#: strength not monotone in severity by the paper's own constants: saturate desaturates at 1-2 and
#: saturates at 3-5; elastic_transform's affine jitter shrinks as its elastic field grows
NOT_MONOTONE = {"saturate", "elastic_transform"}
#: mean |x_c - x| non-decreasing severity by severity (5% slack for the random ones)
MONOTONE = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "gaussian_blur",
            "motion_blur", "zoom_blur", "fog", "brightness", "contrast", "jpeg_compression"}
BLURS = ("defocus_blur", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def smooth_images(n=4, channels=3, size=32, seed=0):
    """Natural-ish images: coarse random pictures enlarged bilinearly, values well inside [0, 1]."""
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=gen(seed))
    return (0.1 + 0.8 * F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)).clamp(0, 1)


def change(name, x, severity, seed=0):
    return float((corrupt(x, name, severity, gen(seed)) - x).abs().mean())


def test_registry_holds_benchmark_and_extras():
    assert set(NAMES) == set(BENCHMARK) | set(EXTRAS) and len(BENCHMARK) == 15 and len(EXTRAS) == 4
    assert [n for n in NAMES if CORRUPTIONS.get(n).substitute] == ["frost_procedural"]
    assert "frost" not in CORRUPTIONS  # the photograph-based original is not implemented


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 1, 8, 8), (2, 3, 12, 20)])
def test_contract_shape_dtype_range_determinism(name, shape):
    x = torch.rand(*shape, generator=gen(1))
    x_copy = x.clone()
    for s in (1, 5):
        y = corrupt(x, name, s, gen(3))
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 and torch.isfinite(y).all()
        assert torch.equal(y, corrupt(x, name, s, gen(3)))  # same seed, same images
    assert torch.equal(x, x_copy)  # input untouched
    y64 = corrupt(x.double(), name, 3, gen(3))
    assert y64.dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [3, 1])
def test_changes_the_image_and_grows_with_severity(name, channels):
    if name == "saturate" and channels == 1:
        pytest.skip("a one-channel image has no saturation (documented identity)")
    x = smooth_images(channels=channels)
    d = [change(name, x, s) for s in range(1, 6)]
    assert all(v > 1e-4 for v in d), d
    if name not in NOT_MONOTONE:
        assert d[4] > d[0], d
    if name in MONOTONE:
        assert all(b >= 0.95 * a for a, b in zip(d, d[1:])), d


def test_saturate_is_not_monotone_by_design():
    x = smooth_images()
    d = [change("saturate", x, s) for s in range(1, 6)]
    assert d[1] > d[0] and d[2] < d[1]  # 0.3x, 0.1x (stronger), then 1.5x saturation


# ---- known answers ------------------------------------------------------------------------
def test_brightness_known_answers():
    x = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    for s, c in enumerate((0.05, 0.1, 0.15, 0.2, 0.3), start=1):
        # HSV value 0.6 -> 0.6 + c with hue and saturation kept: every channel scales by (0.6 + c) / 0.6
        assert torch.allclose(corrupt(x, "brightness", s), x * (0.6 + c) / 0.6, atol=1e-6)
    grey = torch.full((1, 1, 4, 4), 0.5)
    assert torch.allclose(corrupt(grey, "brightness", 5), torch.full_like(grey, 0.8))
    assert torch.allclose(corrupt(torch.full((1, 1, 2, 2), 0.9), "brightness", 4), torch.ones(1, 1, 2, 2))
    black = torch.zeros(1, 3, 2, 2)
    assert torch.allclose(corrupt(black, "brightness", 2), torch.full_like(black, 0.1))


def test_contrast_known_answer():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    x[:, 1] = x[:, 1] * 0.5  # channel mean 0.25: means are per channel
    for s, c in enumerate((0.75, 0.5, 0.4, 0.3, 0.15), start=1):
        mean = x.mean((2, 3), keepdim=True)
        assert torch.allclose(corrupt(x, "contrast", s), (x - mean) * c + mean, atol=1e-6)
    assert torch.allclose(corrupt(x, "contrast", 5)[0, 0], torch.tensor([[0.425, 0.575], [0.575, 0.425]]))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (3, 13, 21)])
def test_pixelate_matches_pillow_box(shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(shape[1], shape[2], shape[0]), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    for s, c in enumerate((0.95, 0.9, 0.85, 0.75, 0.65), start=1):
        pil = Image.fromarray(img[..., 0] if shape[0] == 1 else img)
        small = pil.resize((int(shape[2] * c), int(shape[1] * c)), Image.BOX)
        ref = np.asarray(small.resize((shape[2], shape[1]), Image.BOX), dtype=np.float64).reshape(img.shape) / 255
        ours = corrupt(x, "pixelate", s)[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - ref).max() <= 1.01 / 255, s  # Pillow rounds to 8 bits once per resize


@pytest.mark.parametrize("s,c", list(enumerate((0.04, 0.06, 0.08, 0.09, 0.10), start=1)))
def test_gaussian_noise_statistics(s, c):
    x = torch.full((8, 3, 32, 32), 0.5)
    d = corrupt(x, "gaussian_noise", s, gen(s)) - x  # 0.5 +- 5 sigma: (almost) never clipped
    assert float(d.std()) == pytest.approx(c, rel=0.03) and abs(float(d.mean())) < 0.003


def test_shot_noise_is_poisson():
    x = torch.full((8, 3, 32, 32), 0.4)
    y = corrupt(x, "shot_noise", 5, gen())  # Poisson(50 * 0.4) / 50
    assert float(y.mean()) == pytest.approx(0.4, abs=0.005)
    assert float(y.var()) == pytest.approx(0.4 / 50, rel=0.08)
    assert torch.allclose(y * 50, (y * 50).round(), atol=1e-5)


@pytest.mark.parametrize("s,c", list(enumerate((0.01, 0.02, 0.03, 0.05, 0.07), start=1)))
def test_impulse_noise_fraction(s, c):
    x = torch.full((8, 3, 32, 32), 0.5)
    y = corrupt(x, "impulse_noise", s, gen(s))
    hit = y != 0.5
    assert float(hit.float().mean()) == pytest.approx(c, rel=0.12)
    assert set(y[hit].unique().tolist()) <= {0.0, 1.0}
    assert float((y[hit] == 1).float().mean()) == pytest.approx(0.5, abs=0.08)


def test_speckle_keeps_black():
    assert torch.equal(corrupt(torch.zeros(2, 3, 16, 16), "speckle_noise", 5), torch.zeros(2, 3, 16, 16))


@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_on_constant_image_stays_constant(channels):
    x = torch.full((2, channels, 32, 32), 100 / 255)
    for s in range(1, 6):
        assert float((corrupt(x, "jpeg_compression", s) - x).abs().max()) <= 2 / 255


@pytest.mark.parametrize("name", BLURS)
def test_blurs_keep_constant_images(name):
    x = torch.full((2, 3, 32, 32), 0.3)
    for s in (1, 5):
        assert torch.allclose(corrupt(x, name, s, gen()), x, atol=1e-5)


def test_defocus_kernel_known_answers():
    k = disk_kernel(1.0, 0.0)  # radius 1: the centre and its 4 neighbours, no anti-aliasing
    assert torch.allclose(k[1:4, 1:4], torch.tensor([[0, 0.2, 0], [0.2, 0.2, 0.2], [0, 0.2, 0]], dtype=k.dtype))
    assert float(disk_kernel(1.5, 0.1).sum()) == pytest.approx(1.0)
    x = smooth_images(size=8, channels=1)
    assert torch.allclose(corrupt(x, "defocus_blur", 5), x, atol=1e-6)  # below a pixel at 8x8 (documented)


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = smooth_images(n=1, channels=1)
    for s, sigma in enumerate((0.4, 0.6, 0.7, 0.8, 1.0), start=1):
        ref = ndimage.gaussian_filter(x[0, 0].double().numpy(), sigma, mode="nearest", truncate=4.0)
        assert np.abs(corrupt(x, "gaussian_blur", s)[0, 0].numpy() - ref).max() < 1e-5


def test_motion_kernel_is_one_sided_half_gaussian():
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 16, 16] = 1.0
    y = motion_blur(x, 6, 2.0, torch.zeros(1), 1.0)[0, 0]  # angle 0: out[p] = sum_i w_i x[p + (i, 0)]
    w = torch.exp(-torch.arange(13.0) ** 2 / 8)
    assert torch.allclose(y[16, 4:17].flip(0), w / w.sum(), atol=1e-6)
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-5) and float(y[16, 17:].abs().sum()) < 1e-7


def test_contrast_and_fog_keep_range_on_extremes():
    for v in (0.0, 1.0):
        x = torch.full((1, 3, 8, 8), v)
        for name in ("fog", "snow", "frost_procedural", "spatter", "contrast"):
            y = corrupt(x, name, 5, gen())
            assert 0 <= float(y.min()) and float(y.max()) <= 1


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("x,severity,match", [
    (torch.rand(3, 32, 32), 1, r"shape \(N, C, H, W\)"),
    (torch.rand(1, 2, 8, 8), 1, "C = 1 or 3"),
    (torch.rand(1, 3, 8, 8) * 2, 1, r"\[0, 1\]"),
    ((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), 1, "floating-point"),
    (torch.rand(1, 3, 8, 8), 0, "severity must be an integer in 1..5, got 0"),
    (torch.rand(1, 3, 8, 8), 6, "severity must be an integer in 1..5, got 6"),
    (torch.rand(1, 3, 8, 8), 2.0, "severity"),
    (torch.rand(1, 3, 8, 8), True, "severity"),
    ([[0.5]], 1, "torch.Tensor"),
])
def test_bad_input_one_line_error(x, severity, match):
    with pytest.raises(ValueError, match=match) as e:
        corrupt(x, "gaussian_noise", severity)
    assert "\n" not in str(e.value) and "gaussian_noise" in str(e.value)


def test_unknown_corruption_names_it():
    with pytest.raises(ValueError, match="unknown corruption 'fros' \\(did you mean .*fog") as e:
        corrupt(torch.rand(1, 3, 8, 8), "fros", 1)
    assert "\n" not in str(e.value)


# ---- the check ----------------------------------------------------------------------------
FAST = {"corruptions": ["gaussian_noise", "contrast", "pixelate", "defocus_blur"], "severities": [1, 3, 5],
        "samples": 80}


def run_check(model, data, models, **params):
    p = from_dict(CHECKS.params("corruptions"), {**FAST, **params})
    return CHECKS.get("corruptions")(model, data, p, CheckContext(models=models))


def test_check_params_validated():
    P = CHECKS.params("corruptions")
    assert from_dict(P, {}).corruptions == BENCHMARK and from_dict(P, {}).severities == (1, 2, 3, 4, 5)
    for bad, field in (({"corruptions": ["snow", "hail"]}, "hail"), ({"severities": [0, 1]}, "severities"),
                       ({"severities": [6]}, "severities"), ({"corruptions": []}, "corruptions"),
                       ({"severities": [1, 2], "per_sample_severity": 3}, "per_sample_severity")):
        with pytest.raises(ConfigError, match=field) as e:
            from_dict(P, bad)
        assert "\n" not in str(e.value)


def test_check_metrics_against_itself_and_another(trained_cnn, digits):
    m = run_check(trained_cnn, digits, {"dense": trained_cnn})
    assert m["kind"] == "corruption" and m["mce"] == 1.0 and m["baseline"] == "dense"
    assert all(e["ce"] == 1.0 for e in m["corruption_errors"].values())
    # defocus is (near) identity at 8x8: no relative error for the baseline to divide by
    assert m["relative_mce"] == pytest.approx(1.0) and "defocus_blur" in m["undefined_relative_ce"]
    per = m["per_corruption"]
    assert list(per) == FAST["corruptions"] and all(list(v) == ["1", "3", "5"] for v in per.values())
    assert m["accuracy"] == pytest.approx(np.mean([a for v in per.values() for a in v.values()]))
    assert [p["severity"] for p in m["curve"]] == [1, 3, 5] and list(m["curve"][0])[0] == "severity"
    assert m["curve"][0]["accuracy"] >= m["curve"][-1]["accuracy"]
    assert len(m["per_sample"]) == 80 and m["per_sample_severity"] == 3
    assert sum(m["per_sample"]) / 80 <= min(v["3"] for v in per.values()) + 1e-9
    assert m == run_check(trained_cnn, digits, {"dense": trained_cnn})  # deterministic

    weaker = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        for p in weaker.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen(5)))
    w = run_check(weaker, digits, {"dense": trained_cnn})
    assert w["baseline_clean_accuracy"] == m["clean_accuracy"] and w["mce"] != 1.0
    ce = w["corruption_errors"]["gaussian_noise"]["ce"]
    err = [1 - w["per_corruption"]["gaussian_noise"][s] for s in ("1", "3", "5")]
    base = [1 - m["per_corruption"]["gaussian_noise"][s] for s in ("1", "3", "5")]
    assert ce == pytest.approx(sum(err) / sum(base))


def test_check_without_or_with_missing_baseline(trained_cnn, digits):
    m = run_check(trained_cnn, digits, {}, baseline=None, corruptions=["contrast"], severities=[5])
    assert "mce" not in m and m["per_sample_severity"] == 5
    with pytest.raises(ValueError, match="baseline variant 'dense' is not available"):
        run_check(trained_cnn, digits, {}, corruptions=["contrast"])


def test_same_images_for_every_variant():
    a = torch.rand(4, 8, generator=corruption_generator(0, "snow", 3))
    assert torch.equal(a, torch.rand(4, 8, generator=corruption_generator(0, "snow", 3)))
    assert not torch.equal(a, torch.rand(4, 8, generator=corruption_generator(0, "snow", 4)))


def test_check_through_recipe_and_report(tmp_path):
    recipe = {
        "name": "tiny-c", "seed": 0, "data": {"name": "digits", "subset": {"train": 600, "test": 60}},
        "model": {"name": "small_cnn", "width": 8}, "train": {"epochs": 4, "batch_size": 32, "lr": 0.05},
        "variants": [{"name": "dense"}, {"name": "int4", "method": "quant.uniform", "bits": 4}],
        "evaluate": [{"check": "clean"}, {"check": "pgd", "eps": 0.1, "steps": 2},
                     {"check": "corruptions", **FAST, "samples": 60}],
    }
    res = run_recipe(parse_recipe(recipe), tmp_path)
    dense, q = (v["metrics"]["corruptions"] for v in res["variants"])
    assert dense["mce"] == 1.0 and q["kind"] == "corruption" and isinstance(q["mce"], float)
    assert dense["clean_accuracy"] > 0.5  # the model learned something
    view = RunView(res)
    assert "corruptions" not in view.attack_ids and "pgd" in view.attack_ids
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Corruptions @ severity mean 1,3,5" in md  # the header names the setting
    assert "severity=5" in md and "mce" in md and (tmp_path / "plots" / "curve_corruptions.png").is_file()
