"""Backdoors: BadNets / blended triggers, the poisoned training split, the ``backdoor``
check and the Fine-Pruning defense (known answers, a digits recipe, bad input)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sturdynet.checks.backdoor import BackdoorCheckParams, backdoor_check
from sturdynet.defenses.fine_pruning import FinePruning, FinePruningParams, mean_activations, pick_group
from sturdynet.train import TrainConfig
from sturdynet.train.context import training_context
from sturdynet.core.params import ConfigError
from sturdynet.data import load_data
from sturdynet.data.base import DataBundle, Split
from sturdynet.data.poison import BackdoorSpec, PoisonParams, poison_arrays, poison_indices, poisoning_of
from sturdynet.data.trigger import TriggerParams, apply_trigger, patch_side
from sturdynet.checks.base import CheckContext
from sturdynet.run.recipe import parse_recipe
from sturdynet.report import load_results, render_report
from sturdynet.report.view import RunView
from sturdynet.run import run_recipe
from sturdynet.run.checkpoint import load_checkpoint


# ---- triggers ---------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_checkerboard_patch_known_answer(channels):
    x = torch.rand(2, channels, 5, 6) * 0.5 + 0.25  # no pixel is 0 or 1 before the trigger
    out = apply_trigger(x, TriggerParams(pixels=2))
    changed = out != x
    assert changed[:, :, 3:, 4:].all() and not changed[:, :, :3].any() and not changed[:, :, :, :4].any()
    assert torch.equal(out[0, :, 3:, 4:], torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(channels, 2, 2))
    assert torch.equal(out[:, :, :3], x[:, :, :3])  # untouched, and the input itself is unchanged
    assert not torch.equal(out, x)


def test_white_square_position_and_relative_size():
    x = torch.zeros(1, 1, 8, 8)
    out = apply_trigger(x, TriggerParams(pattern="white", position="top_left", size=0.25))
    assert out.sum() == 4 and out[0, 0, :2, :2].eq(1).all()
    center = apply_trigger(x, TriggerParams(pattern="white", position="center", pixels=2))
    assert center[0, 0, 3:5, 3:5].eq(1).all() and center.sum() == 4
    assert [patch_side(TriggerParams(), s, s) for s in (8, 28, 32)] == [2, 7, 8]


def test_blend_trigger_is_a_fixed_pattern():
    x = torch.rand(4, 3, 8, 8)
    p = TriggerParams(type="blend", alpha=0.25, pattern_seed=3)
    out = apply_trigger(x, p)
    pattern = (out - 0.75 * x) / 0.25
    assert torch.allclose(pattern, pattern[0].expand_as(pattern), atol=1e-5)  # one pattern for all images
    assert torch.allclose(apply_trigger(x, p), out) and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(apply_trigger(x, dataclasses.replace(p, pattern_seed=4)), out)


# ---- poisoned training split ------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, 0.1, 1 / 3, 1.0])
def test_poisoned_subset_size_and_seed(rate):
    y = torch.arange(100) % 10
    idx = poison_indices(y, PoisonParams(rate=rate), seed=5)
    assert idx.numel() == round(rate * 100) and idx.unique().numel() == idx.numel()
    assert torch.equal(idx, poison_indices(y, PoisonParams(rate=rate), seed=5))
    if 0 < rate < 1:
        assert not torch.equal(idx, poison_indices(y, PoisonParams(rate=rate), seed=6))


def test_relabel_all_to_one_add_and_all_to_all_replace():
    x, y = torch.rand(50, 1, 8, 8) * 0.5, torch.arange(50) % 5
    xa, ya, facts = poison_arrays(x, y, PoisonParams(rate=0.2, target=3), num_classes=5, seed=0)
    assert facts["poisoned_samples"] == 10 and len(ya) == 60
    assert torch.equal(xa[:50], x) and torch.equal(ya[:50], y) and ya[50:].eq(3).all()
    idx = poison_indices(y, PoisonParams(rate=0.2), seed=0)
    assert torch.equal(xa[50:], apply_trigger(x[idx], TriggerParams()))
    xr, yr, _ = poison_arrays(x, y, PoisonParams(rate=0.2, mode="all_to_all", inject="replace"), 5, seed=0)
    assert len(yr) == 50 and torch.equal(yr[idx], (y[idx] + 1) % 5)
    rest = torch.ones(50, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(yr[rest], y[rest]) and torch.equal(xr[rest], x[rest])
    src = poison_indices(y, PoisonParams(rate=0.1, source=2, target=0), seed=0)
    assert src.numel() == 5 and y[src].eq(2).all()


def test_poisoned_bundle_records_its_poisoning():
    spec = parse_recipe(_recipe({"rate": 0.1, "target": 7})).data
    data = load_data(spec, seed=0)
    assert data.info["poisoned_samples"] == round(0.1 * 1294) and len(data.train) == 1294 + 129
    assert poisoning_of(data) == PoisonParams(rate=0.1, target=7)
    assert data.train.y[1294:].eq(7).all() and len(data.val) == 144  # val and test stay clean


# ---- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("poison, field", [
    ({"rate": 1.5}, "data.poison.rate"), ({"rate": -0.1}, "data.poison.rate"),
    ({"target": 10}, "data.poison.target"), ({"pixels": 9}, "data.poison.pixels"),
    ({"size": 1.2}, "data.poison.size"), ({"mode": "all_to_all", "source": 1}, "data.poison.source"),
    ({"source": 3, "rate": 0.5}, "data.poison.rate"), ({"kind": "patch"}, "data.poison.kind"),
])
def test_bad_poisoning_names_the_field(poison, field):
    with pytest.raises(ConfigError) as e:
        load_data(parse_recipe(_recipe(poison)).data, seed=0)
    assert str(e.value).startswith(field + ":") and "\n" not in str(e.value)


def test_check_refuses_a_trigger_other_than_the_training_one(digits):
    poisoned = load_data(parse_recipe(_recipe({"rate": 0.1})).data, seed=0)
    model = _tiny_cnn(poisoned)
    with pytest.raises(ConfigError, match=r"^trigger: differs"):
        backdoor_check(model, poisoned, BackdoorCheckParams(trigger=BackdoorSpec(target=1)), CheckContext())
    with pytest.raises(ConfigError, match=r"^trigger\.target: must be a class index"):
        backdoor_check(model, digits, BackdoorCheckParams(trigger=BackdoorSpec(target=10)), CheckContext())
    with pytest.raises(ConfigError, match=r"^evaluate\[1\]\.trigger\.alpha: must be in \(0, 1\]"):
        parse_recipe({**_recipe(None), "evaluate": ["clean", {"check": "backdoor", "trigger": {"alpha": 2}}]})


# ---- fine-pruning known answer ----------------------------------------------------------
def _hand_made() -> nn.Module:
    """conv(1->4) -> ReLU -> avg-pool -> linear; channel 2 is dormant (negative weights
    and bias on non-negative inputs), channel 0 is the next weakest."""
    conv, fc = nn.Conv2d(1, 4, 1), nn.Linear(4, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.5, 2.0, -1.0, 3.0]).view(4, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.0, -0.1, 0.0]))
        fc.weight.copy_(torch.tensor([[1.0, 1.0, 5.0, -1.0], [-1.0, -1.0, 5.0, 1.0]]))
        fc.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()


def _bundle(x: torch.Tensor, y: torch.Tensor) -> DataBundle:
    s = Split(x, y)
    return DataBundle("toy", s, s, s, 2, ["a", "b"], (0.0,), (1.0,))


def test_fine_pruning_removes_the_dormant_channel_first():
    model, x = _hand_made(), torch.rand(16, 1, 3, 3)
    group = pick_group(model, None)
    act = mean_activations(model, group, x)
    assert act[2] == 0 and torch.allclose(act[[0, 1, 3]].float(), x.mean() * torch.tensor([0.5, 2.0, 3.0]))
    data = _bundle(x, torch.zeros(16, dtype=torch.long))
    ctx = training_context(data, TrainConfig(epochs=1))
    params = FinePruningParams(amount=0.5, max_accuracy_drop=None, epochs=0)
    out = FinePruning().apply(model, params, ctx)
    log = ctx.log["prune.fine_pruning"]
    assert log["pruned_channels"] == [2, 0] and log["channels_pruned"] == 2  # in pruning order and log["channel_sparsity"] == 0.5
    assert out[0].out_channels == 2 and out[4].in_features == 2 and model[0].out_channels == 4
    masked = FinePruning().apply(model, dataclasses.replace(params, physical=False),
                                 training_context(data, TrainConfig(epochs=1)))
    assert torch.allclose(out(x), masked(x), atol=1e-6)
    assert masked[0].weight_mask.flatten().tolist() == [False, True, False, True]


def test_fine_pruning_stops_at_the_accuracy_limit():
    model, x = _hand_made(), torch.rand(32, 1, 3, 3)
    with torch.no_grad():  # class 0 reads channel 1 (2m), class 1 channel 3 (1.5m): pruning 1 flips every answer
        model[4].weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]]))
    ctx = training_context(_bundle(x, torch.zeros(32, dtype=torch.long)), TrainConfig(epochs=1))
    FinePruning().apply(model, FinePruningParams(amount=0.75, max_accuracy_drop=0.0, epochs=0), ctx)
    log = ctx.log["prune.fine_pruning"]
    assert log["pruned_channels"] == [2, 0] and log["stopped_by"] == "accuracy_drop"
    assert [p["accuracy"] for p in log["curve"]] == [1.0, 1.0, 0.0] and log["clean_accuracy_pruned"] == 1.0
    with pytest.raises(TypeError, match="prune.fine_pruning trains the network"):
        FinePruning().apply(model, FinePruningParams(), None)
    with pytest.raises(ValueError, match="layer: 'nope'"):
        FinePruning().apply(model, FinePruningParams(layer="nope"), ctx)


# ---- the digits recipe ------------------------------------------------------------------
def _recipe(poison, variants=({"name": "dense"},), epochs: int = 8) -> dict:
    data = {"name": "digits", **({"poison": poison} if poison is not None else {})}
    return {"name": "bd", "seed": 0, "data": data, "model": {"name": "small_cnn", "width": 8},
            "train": {"epochs": epochs, "lr": 0.05, "batch_size": 64}, "variants": list(variants),
            "evaluate": [{"check": "clean"}, {"check": "backdoor"}]}


def _tiny_cnn(data) -> nn.Module:
    from sturdynet.core.params import Component
    from sturdynet.models import model_for_data
    from sturdynet.models.small_cnn import SmallCNNParams

    torch.manual_seed(0)
    return model_for_data(Component("small_cnn", SmallCNNParams(width=4)), data).eval()


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("backdoor")
    variants = ({"name": "dense"},
                {"name": "fine-pruned", "method": "prune.fine_pruning", "amount": 0.5, "epochs": 1})
    recipe = parse_recipe(_recipe({"rate": 0.1, "target": 0}, variants))
    return out, run_recipe(recipe, out)


def test_poisoned_digits_backdoor_works_and_a_clean_model_resists(poisoned_run, tmp_path):
    _, res = poisoned_run
    dense = res["variants"][0]["metrics"]["backdoor"]
    assert dense["kind"] == "backdoor" and dense["trigger_source"] == "data.poison"
    assert dense["attack_success_rate"] > 0.8 and dense["clean_accuracy"] > 0.9
    assert dense["accuracy"] < 0.2 and dense["samples"] == 359 - 36  # the target class (36 images) is left out
    clean = run_recipe(parse_recipe(_recipe(None)), tmp_path)["variants"][0]["metrics"]["backdoor"]
    assert clean["trigger_source"] == "default" and clean["attack_success_rate"] <= 0.15
    assert clean["accuracy"] > 0.85


def test_fine_pruned_variant_reports_and_reloads(poisoned_run):
    out, res = poisoned_run
    fp = res["variants"][1]
    assert fp["status"] == "ok", fp.get("error")
    log = fp["method_log"]["prune.fine_pruning"]
    assert log["layer"] == "11" and log["channels_before"] == 16 and 0 <= log["channels_pruned"] <= 8
    assert log["params_after"] < log["params_before"] or log["channels_pruned"] == 0
    model, _ = load_checkpoint(out / "variants" / "fine-pruned.safetensors")  # physical: sizes read from the checkpoint
    assert model[11].out_channels == 16 - log["channels_pruned"]


def test_report_keeps_backdoor_out_of_the_robust_minimum(poisoned_run):
    out, _ = poisoned_run
    view = RunView(load_results(out))
    assert "backdoor" in view.other_ids and "backdoor" not in view.attack_ids
    render_report(out)
    md = (out / "report.md").read_text()
    asr = view.variants[0]["metrics"]["backdoor"]["attack_success_rate"]
    assert "Backdoor" in md and "attack_success_rate" in md and f"| {100 * asr:.1f}% |" in md
