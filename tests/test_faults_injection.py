"""Random bit flips and bit-error-rate injection: counts, binomial bounds, seeds, checks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sturdynet.core.params import from_dict
from sturdynet.checks.base import CheckContext
from sturdynet.faults import BitErrors, BitView, RandomFlips, ViewParams, deploy, hamming_distance
from sturdynet.faults.ber import flip_float32
from sturdynet.core.registry import CHECKS, FAULTS


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("fmt", ["int", "float32", "float16"])
def test_ber_zero_leaves_model_bit_identical(fmt):
    m = _model()
    view = ViewParams(float_layers=fmt)  # type: ignore[arg-type]
    faulty, rec = BitErrors(0.0, float_layers=fmt).inject(m, torch.Generator().manual_seed(0))
    assert rec["flips"] == 0
    assert _same(faulty, deploy(m, view))
    assert hamming_distance(faulty, deploy(m, view), view) == 0


@pytest.mark.parametrize("fmt,rate", [("int", 1e-2), ("float32", 1e-3), ("float16", 3e-3)])
def test_ber_flips_about_rate_times_bits(fmt, rate):
    m = _model()
    view = ViewParams(float_layers=fmt)  # type: ignore[arg-type]
    fm = BitErrors(rate, float_layers=fmt)
    n = BitView(deploy(m, view)).total_bits
    mu, sigma = n * rate, math.sqrt(n * rate * (1 - rate))
    counts = []
    for t in range(8):
        faulty, rec = fm.inject(m, torch.Generator().manual_seed(t))
        assert rec["bits"] == n
        assert hamming_distance(deploy(m, view), faulty, view) == rec["flips"]  # every drawn bit really flipped
        assert abs(rec["flips"] - mu) <= 4 * sigma
        counts.append(rec["flips"])
    assert abs(sum(counts) / len(counts) - mu) <= 4 * sigma / math.sqrt(len(counts))


def test_ber_binary_layers_one_bit_each(trained_cnn):
    meth, pcls = __import__("sturdynet.core.registry", fromlist=["METHODS"]).METHODS, None
    if "binarize" not in meth:
        pytest.skip("binarize method not available")
    pcls = meth.params("binarize")
    b = meth.get("binarize")().prepare(trained_cnn, from_dict(pcls, {}))
    dep = deploy(b, ViewParams(float_layers="skip"))
    view = BitView(dep, "skip")
    assert view.sites and all(s.kind == "binary" and s.bits == 1 for s in view.sites)
    x = torch.rand(8, 1, 8, 8)
    assert torch.allclose(dep(x), b.eval()(x), atol=1e-5)
    faulty, rec = BitErrors(0.05, float_layers="skip").inject(b, torch.Generator().manual_seed(1))
    changed = sum(int((f.weight != d.weight).sum()) for f, d in
                  zip([s.module for s in BitView(faulty, "skip").sites], [s.module for s in view.sites]))
    assert changed == rec["flips"] > 0  # a binary flip negates exactly one weight


def test_same_seed_same_faults_and_caller_untouched():
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for fm in (BitErrors(1e-3), RandomFlips(25), BitErrors(1e-4, activations=True)):
        a, ra = fm.inject(m, torch.Generator().manual_seed(5))
        b, rb = fm.inject(m, torch.Generator().manual_seed(5))
        c, _ = fm.inject(m, torch.Generator().manual_seed(6))
        assert _same(a, b) and not _same(a, c)
        assert ra["flips"] == rb["flips"]
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_random_flips_flip_exactly_n_distinct_bits():
    m = _model(2)
    faulty, rec = RandomFlips(40).inject(m, torch.Generator().manual_seed(0))
    assert rec["flips"] == 40 and len(set(rec["where"])) == 40
    assert hamming_distance(deploy(m), faulty) == 40


def test_activation_faults_transient_and_counted():
    m = _model()
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    faulty, rec = BitErrors(0.0, activations=True).inject(m, torch.Generator().manual_seed(0))
    assert torch.equal(faulty(x), deploy(m)(x))
    faulty, rec = BitErrors(1e-3, activations=True).inject(m, torch.Generator().manual_seed(0))
    y1, y2 = faulty(x), faulty(x)
    assert rec["activation_faults"].flips > 0
    assert not torch.equal(y1, y2)  # fresh faults at every forward pass


def test_flip_float32_known_answer_and_count():
    t = torch.ones(1000)
    out, k = flip_float32(t, 0.0, torch.Generator())
    assert k == 0 and torch.equal(out, t)
    out, k = flip_float32(t, 1.0, torch.Generator())
    assert k == 32000
    assert torch.equal(out.view(torch.int32), ~t.view(torch.int32))  # every bit inverted


def test_registry_and_bad_input():
    assert set(FAULTS.names()) >= {"ber", "random_flips"}
    with pytest.raises(ValueError):
        BitErrors(1.5)
    with pytest.raises(ValueError):
        RandomFlips(-1)
    with pytest.raises(ValueError):
        RandomFlips(10 ** 9).inject(_model(), torch.Generator())


def test_checks_report_curves(digits, trained_cnn):
    ctx = CheckContext(seed=0)
    p = from_dict(CHECKS.params("ber"), {"rates": [0.0, 1e-3, 0.05], "trials": 2, "samples": 200})
    m = CHECKS.get("ber")(trained_cnn, digits, p, ctx)
    assert [c["ber"] for c in m["curve"]] == [0.0, 1e-3, 0.05]
    assert m["curve"][0]["accuracy"] == m["clean_accuracy"] > 0.85
    assert m["curve"][2]["accuracy"] < m["clean_accuracy"]
    assert m["curve"][0]["flips"] == 0
    again = CHECKS.get("ber")(trained_cnn, digits, p, ctx)
    assert again["curve"] == m["curve"]  # seeded
    p = from_dict(CHECKS.params("random_flips"), {"flips": [1, 300], "trials": 2, "samples": 200})
    r = CHECKS.get("random_flips")(trained_cnn, digits, p, ctx)
    assert [c["flips"] for c in r["curve"]] == [0, 1, 300]
    assert r["accuracy"] == r["curve"][1]["accuracy"]
    assert r["curve"][2]["accuracy"] <= r["clean_accuracy"]


def _bytes(model):
    return {k: v.detach().clone().contiguous().view(-1).view(torch.uint8) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("float_layers", ["int", "float32", "float16"])
def test_in_place_trials_restore_every_bit_also_after_an_exception(float_layers):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import bfa_cases
    from sturdynet.faults import BitErrors, BitView, RandomFlips, ViewParams, deploy

    model = bfa_cases.cases()[4][1]  # ternary convs, float first/last layers
    view_p = ViewParams(float_layers=float_layers)
    base = deploy(model, view_p)
    view = BitView(base, float_layers)
    before = _bytes(base)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fm = BitErrors(rate=3e-3, float_layers=float_layers)
    faulty, rec0 = fm.inject(model, torch.Generator().manual_seed(5))
    with fm.applied(view, torch.Generator().manual_seed(5)) as rec:  # the same draws as inject
        assert rec["flips"] == rec0["flips"] > 0
        assert hamming_distance(base, deploy(model, view_p), view_p) == rec["flips"]
        with torch.no_grad():
            assert torch.allclose(base(x), faulty(x), rtol=0, atol=0, equal_nan=True)
    after = _bytes(base)
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical, -0.0 included
    with pytest.raises(RuntimeError, match="inside"):
        with RandomFlips(flips=50, float_layers=float_layers).applied(view, torch.Generator().manual_seed(1)):
            raise RuntimeError("inside the trial")
    after = _bytes(base)
    assert all(torch.equal(before[k], after[k]) for k in before)
