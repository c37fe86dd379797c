"""The Bit-Flip Attack: bit-gradient rule, loss ascent, determinism, the bfa check."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sturdynet.core.params import from_dict
from sturdynet.checks.base import CheckContext
from sturdynet.faults import BitFlipAttack, BitView, ViewParams, deploy, hamming_distance
from sturdynet.checks.bfa import mean_curve
from sturdynet.core.registry import CHECKS


def _one_weight_view(q: int, bits: int = 8):
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[float(q), 127.0]]))  # scale = 127 / 127 = 1
    dep = deploy(nn.Sequential(lin), ViewParams(bits=bits))
    view = BitView(dep)
    assert view.integers(0).tolist() == [q, 127]
    return view


@pytest.mark.parametrize("q,g,expect_bit", [
    (3, 1.0, 6),     # 00000011, dL/dw > 0: raise q; the largest zero magnitude bit is bit 6 (+64)
    (-3, 1.0, 7),    # 11111101: clearing the sign bit adds +128
    (3, -1.0, 7),    # lower q: setting the sign bit subtracts 128
    (100, -1.0, 7),  # 01100100: setting the sign bit (-128) beats clearing bit 6 (-64)
])
def test_bit_gradient_rule_known_answers(q, g, expect_bit):
    view = _one_weight_view(q)
    atk = BitFlipAttack(k_top=1)
    grad = torch.tensor([[g, 0.0]])
    elem, bit, score, avail = atk.candidate(view, 0, grad, 1)
    assert elem.tolist() == [0] and bit.tolist() == [expect_bit]
    # every proposed flip moves the weight in the gradient's direction
    elem, bit, _, avail = atk.candidate(view, 0, grad, 8)
    assert elem.numel() == avail <= 8
    before = int(view.integers(0)[0])
    for b in bit.tolist():
        v = _one_weight_view(q)
        v.flip(0, torch.tensor([0]), torch.tensor([b]))
        assert (int(v.integers(0)[0]) - before) * g > 0


def test_no_uphill_bit_gives_no_candidate():
    view = _one_weight_view(127)  # 01111111 with dL/dw > 0: every magnitude bit is set, sign bit lowers
    assert BitFlipAttack(k_top=1).candidate(view, 0, torch.tensor([[1.0, 0.0]]), 1) is None


def test_first_flip_raises_attack_loss_and_caller_untouched(digits, trained_cnn):
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    x = digits.val.x[:64]
    atk = BitFlipAttack(k_top=10, max_flips=1)
    res = atk.run(trained_cnn, x, digits.test.take(200), digits.num_classes)
    assert res.flips == 1 and len(res.history) == 1
    assert res.curve[1]["loss"] > res.curve[0]["loss"]
    dep = deploy(trained_cnn)
    torch.set_grad_enabled(False)
    y = dep(x).argmax(1)
    assert float(F.cross_entropy(res.model(x), y)) == pytest.approx(res.curve[1]["loss"], rel=1e-5)
    assert float(F.cross_entropy(res.model(x), y)) > float(F.cross_entropy(dep(x), y))
    torch.set_grad_enabled(True)
    assert hamming_distance(dep, res.model) == 1
    assert all(torch.equal(v, before[k]) for k, v in trained_cnn.state_dict().items())


def test_bfa_crushes_digits_far_faster_than_random(digits, trained_cnn):
    atk = BitFlipAttack(k_top=10, max_flips=40)
    held = digits.test.take(200)
    res = atk.run(trained_cnn, digits.val.x[:128], held, digits.num_classes)
    assert res.flips_to_random is not None and res.flips_to_random <= 40
    assert res.curve[-1]["balanced_accuracy"] <= 0.11  # the default stop rule
    assert res.reached["balanced_accuracy"] == res.flips_to_random
    losses = [p["loss"] for p in res.curve]
    assert all(b > a for a, b in zip(losses, losses[1:]))  # every committed step went uphill
    again = atk.run(trained_cnn, digits.val.x[:128], held, digits.num_classes)
    assert again.curve == res.curve and again.history == res.history  # deterministic


def test_binary_model_attack(digits, trained_cnn):
    from sturdynet.core.registry import METHODS

    if "binarize" not in METHODS:
        pytest.skip("binarize method not available")
    b = METHODS.get("binarize")().prepare(trained_cnn, from_dict(METHODS.params("binarize"), {}))
    res = BitFlipAttack(k_top=10, max_flips=3, target_accuracy=0.0).run(b, digits.val.x[:64], digits.test.take(100), 10)
    assert res.flips >= 1 and res.curve[1]["loss"] > res.curve[0]["loss"]


def test_ternary_model_attack_crushes_accuracy(digits, trained_cnn):
    """BFA on the 2-bit TTQ codes alone (float first/last layers not attackable)."""
    from sturdynet.core.method import MethodContext
    from sturdynet.core.registry import METHODS

    params = from_dict(METHODS.params("quant.ternary"), {})
    t = METHODS.get("quant.ternary")().apply(trained_cnn, params, MethodContext(data=digits, seed=0)).eval()
    held = digits.test.take(200)
    atk = BitFlipAttack(k_top=10, max_flips=8, view=ViewParams(float_layers="skip"), target_accuracy=0.0)
    res = atk.run(t, digits.val.x[:128], held, digits.num_classes)
    assert res.curve[0]["accuracy"] > 0.5  # the ternarized model works before the attack
    assert res.flips == 8 and res.curve[-1]["accuracy"] < res.curve[0]["accuracy"] - 0.3
    losses = [p["loss"] for p in res.curve]
    assert all(b > a for a, b in zip(losses, losses[1:]))
    assert hamming_distance(deploy(t, atk.view), res.model, atk.view) == 8


def test_bad_input():
    with pytest.raises(ValueError):
        BitFlipAttack(k_top=0)
    with pytest.raises(ValueError):
        BitFlipAttack(view=ViewParams(float_layers="float32"))


def test_mean_curve_carries_last_value():
    c1 = [{"flips": 0, "accuracy": 1.0}, {"flips": 1, "accuracy": 0.5}, {"flips": 2, "accuracy": 0.1}]
    c2 = [{"flips": 0, "accuracy": 0.8}, {"flips": 2, "accuracy": 0.05}, {"flips": 3, "accuracy": 0.0}]
    m = mean_curve([c1, c2])
    assert [p["flips"] for p in m] == [0, 1, 2, 3]
    assert [round(p["accuracy"], 6) for p in m] == [0.9, 0.65, 0.075, 0.05]


def test_bfa_check_metrics(digits, trained_cnn):
    p = from_dict(CHECKS.params("bfa"), {"trials": 2, "attack_batch": 64, "max_flips": 30, "samples": 150})
    m = CHECKS.get("bfa")(trained_cnn, digits, p, CheckContext(seed=0))
    ftr = m["flips_to_random"]
    assert set(ftr) >= {"mean", "std", "reached", "trials", "censored"} and ftr["trials"] == 2
    assert 1 <= ftr["mean"] <= 30
    assert m["curve"][0]["flips"] == 0 and m["curve"][0]["accuracy"] == pytest.approx(m["clean_accuracy"])
    assert m["random_baseline"]["mean"] > m["final_accuracy"]  # chosen flips hurt more than random ones
    assert m["flips"] == 10 and m["final_accuracy"] <= m["accuracy"] <= m["clean_accuracy"]
    at10 = [p for p in m["curve"] if p["flips"] <= 10][-1]["accuracy"]
    assert m["accuracy"] == pytest.approx(at10)
    assert m["seconds_per_flip"] > 0
    assert all(t["hamming"] <= t["flips"] for t in m["trials"])


def test_widening_keeps_a_stuck_search_going(digits, trained_cnn):
    from sturdynet.core.registry import METHODS

    if "binarize" not in METHODS:
        pytest.skip("binarize method not available")
    b = METHODS.get("binarize")().prepare(trained_cnn, from_dict(METHODS.params("binarize"), {"activations": False}))
    args = (b, digits.val.x[:64], digits.test.take(200), 10)
    view = ViewParams(float_layers="skip")
    fixed = BitFlipAttack(max_flips=20, view=view, widen=False, balanced=False).run(*args)
    wide = BitFlipAttack(max_flips=20, view=view, widen=True, balanced=False).run(*args)
    assert fixed.stalled and fixed.flips < 20  # top-10 per layer runs out of uphill flips
    assert not wide.stalled and wide.flips == 20
    assert max(h["k_top"] for h in wide.history) > 10
    losses = [p["loss"] for p in wide.curve]
    assert all(b_ > a for a, b_ in zip(losses, losses[1:]))


def test_balanced_accuracy_of_a_collapsed_model():
    from sturdynet.data.base import Split
    from sturdynet.faults.common import accuracies

    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            out = torch.zeros(x.shape[0], 3)
            out[:, 0] = 1.0
            return out

    y = torch.tensor([0] * 6 + [1] * 3 + [2])  # class 0 holds 60%
    a = accuracies(Const(), Split(torch.zeros(10, 1, 2, 2), y))
    assert a["accuracy"] == pytest.approx(0.6) and a["balanced_accuracy"] == pytest.approx(1 / 3)
