"""Direction tests (issue 15): each defense shows its paper's effect on a small budget with fixed
seeds, against a control that differs only in the method (a method that does nothing fails).
Larger-budget numbers: BENCHMARKS.md and bench/results/."""
from __future__ import annotations

import copy
import statistics

import pytest
import torch

from sturdynet.checks.base import CheckContext
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, from_dict
from sturdynet.core.registry import CHECKS, METHODS
from sturdynet.models import model_for_data
from sturdynet.models.small_cnn import SmallCNNParams
from sturdynet.train import TrainConfig, fit


def _bfa_flips(model, data, trials: int, seed: int = 0):
    p = from_dict(CHECKS.params("bfa"), {"trials": trials, "attack_batch": 64, "max_flips": 200,
                                         "random_baseline": False, "samples": None})
    r = CHECKS.get("bfa")(model, data, p, CheckContext(seed=seed))
    return [t["flips_to_random"] if t["flips_to_random"] is not None else 200 for t in r["trials"]]


@pytest.mark.slow
def test_clustering_raises_bfa_flips(digits):
    """Piece-wise clustering (He et al., CVPR 2020): BFA needs more flips to reach random guess
    than after the same fine-tuning without the penalty (same seed, same attack batches).
    Budget of bench/clustering_bfa_bench.py, seed 0, its first 3 trials (small_cnn width 16,
    15 epochs; clustering strength 0.3, 10 epochs at lr 0.01). At width 8 with 3 clustering
    epochs the direction does not appear (docs/faults.md)."""
    torch.manual_seed(0)
    model = model_for_data(Component("small_cnn", SmallCNNParams(width=16)), digits)
    cfg = TrainConfig(epochs=15, lr=0.05, batch_size=64)
    fit(model, digits, cfg, seed=0)
    model.eval()
    ctx = training_context(digits, cfg, seed=0)
    cp = from_dict(METHODS.params("faults.clustering"), {"epochs": 10, "strength": 0.3, "lr": 0.01})
    clustered = METHODS.get("faults.clustering")().apply(model, cp, ctx).eval()
    control = copy.deepcopy(model)
    fit(control, digits, TrainConfig(epochs=10, lr=0.01, batch_size=64), seed=0)
    c, k = _bfa_flips(clustered, digits, 3), _bfa_flips(control.eval(), digits, 3)
    assert statistics.mean(c) > statistics.mean(k), (c, k)


def _backdoored(seed: int = 0):
    from pathlib import Path

    from sturdynet.core.params import load_yaml
    from sturdynet.data import load_data
    from sturdynet.run.recipe import parse_recipe

    raw = load_yaml(Path(__file__).resolve().parents[1] / "recipes" / "backdoor-digits.yaml")
    raw["seed"] = seed
    recipe = parse_recipe(raw)
    data = load_data(recipe.data, seed)
    torch.manual_seed(seed)
    model = model_for_data(recipe.model, data)
    fit(model, data, recipe.train, seed=seed)
    return model.eval(), data, recipe


def _asr(model, data) -> float:
    from sturdynet.core.tensors import predict
    from sturdynet.data.poison import poisoning_of, spec_of
    from sturdynet.data.trigger import apply_trigger

    spec = spec_of(poisoning_of(data))
    v = spec.victims(data.test.y)
    pred = predict(model, apply_trigger(data.test.x[v], spec), 512).argmax(1)
    return float((pred == spec.relabel(data.test.y[v], data.num_classes)).float().mean())


@pytest.mark.slow
def test_fine_pruning_lowers_attack_success_rate():
    """Fine-Pruning (arXiv 1805.12185) on the BadNets digits recipe, seeds 0-4 (one seed is too
    noisy: per-seed ASR after pruning ranges from a few % to over 90%): pruning the dormant
    channels of the last conv lowers the mean attack success rate, and pruning + clean
    fine-tuning keeps it below the backdoored models' while recovering clean accuracy. (That
    the fine-tuning raises the rate again relative to pruning alone is the measured behaviour
    at this scale; docs/backdoors.md.) Removing no channel (``amount: 0``) must fail."""
    from sturdynet.defenses.fine_pruning import FinePruning, FinePruningParams
    from sturdynet.train.loop import evaluate_accuracy

    base_asr, pruned, fp, none, clean_pruned, clean_fp = [], [], [], [], [], []
    for seed in range(5):
        base, data, recipe = _backdoored(seed)
        base_asr.append(_asr(base, data))

        def run(**kw):
            ctx = training_context(data, recipe.train, seed=seed)
            m = FinePruning().apply(base, from_dict(FinePruningParams, {"max_accuracy_drop": 0.04, **kw}), ctx)
            return _asr(m, data), evaluate_accuracy(m, data.test)["accuracy"]

        a, c = run(epochs=0)
        pruned.append(a)
        clean_pruned.append(c)
        a, c = run(epochs=5)
        fp.append(a)
        clean_fp.append(c)
        if seed == 0:
            none.append(run(epochs=0, amount=0.0)[0])
    mean = statistics.mean
    assert min(base_asr) > 0.9 and none[0] > 0.9  # a defense that removes nothing leaves the backdoor
    assert mean(pruned) < 0.7 * mean(base_asr), pruned
    assert mean(fp) < 0.85 * mean(base_asr), fp
    assert mean(clean_fp) > mean(clean_pruned)


@pytest.mark.slow
def test_hydra_beats_magnitude_under_adversarial_training(digits):
    """HYDRA (arXiv 2002.10509) vs layer-wise magnitude pruning at 95% from the same PGD-AT model,
    equal adversarial epochs afterwards: HYDRA keeps more clean and more robust accuracy.
    Budget of bench/hydra_bench.py --width 16 --score-epochs 5, seeds 0-2 (a HYDRA whose scores
    do not learn keeps the magnitude mask it starts from and cannot beat magnitude by the margin)."""
    import dataclasses

    from sturdynet.attacks import create_attack
    from sturdynet.core.registry import ADVERSARIAL
    from sturdynet.train.loop import evaluate_accuracy

    adv = Component("pgd", from_dict(ADVERSARIAL.params("pgd"), {"eps": 0.1, "steps": 3}))

    def robust(model):
        model.eval()
        x, y = digits.test.x, digits.test.y
        a = create_attack("pgd", model, eps=0.1, steps=20, random_start=True, seed=0, batch_size=512)(x, y)
        with torch.no_grad():
            return float((model(a).argmax(1) == y).float().mean())

    def one(seed):
        torch.manual_seed(seed)
        base = model_for_data(Component("small_cnn", SmallCNNParams(width=16)), digits)
        cfg = TrainConfig(epochs=8, lr=0.05, batch_size=64, adversarial=adv)
        fit(base, digits, cfg, seed=seed)
        ctx = training_context(digits, cfg, seed=seed)
        hp = from_dict(METHODS.params("prune.hydra"), {"sparsity": 0.95, "score_epochs": 5, "score_lr": 0.1})
        h = METHODS.get("prune.hydra")().apply(base, hp, ctx)
        fit(h, digits, dataclasses.replace(cfg, epochs=2, lr=0.005), seed=seed)
        mp = from_dict(METHODS.params("prune.layerwise_magnitude"), {"sparsity": 0.95})
        m = METHODS.get("prune.layerwise_magnitude")().apply(base, mp, ctx)
        fit(m, digits, dataclasses.replace(cfg, epochs=7, lr=0.005), seed=seed)
        return evaluate_accuracy(h, digits.test)["accuracy"], evaluate_accuracy(m, digits.test)["accuracy"], \
            robust(h), robust(m)

    rows = [one(seed) for seed in range(3)]
    ch, cm, rh, rm = (statistics.mean(r[i] for r in rows) for i in range(4))
    assert all(r[2] > r[3] for r in rows), rows  # robust accuracy: HYDRA ahead on every seed
    assert ch > cm and rh > rm + 0.1, (ch, cm, rh, rm)


@pytest.mark.slow
def test_adversarial_training_helps_binary_weights(digits):
    """PGD-AT during binary QAT (binary weights, real activations; gradients through the
    straight-through estimators) raises robust accuracy over the same QAT without it, seed 0 of
    bench/binary_at_bench.py (robust = PGD-20 through both STE and true gradients)."""
    from sturdynet.attacks import create_attack
    from sturdynet.core.registry import ADVERSARIAL

    torch.manual_seed(0)
    base = model_for_data(Component("small_cnn", SmallCNNParams(width=16)), digits)
    cfg = TrainConfig(epochs=15, lr=0.05, batch_size=64)
    fit(base, digits, cfg, seed=0)
    adv = Component("pgd", from_dict(ADVERSARIAL.params("pgd"), {"eps": 0.1, "steps": 3}))
    bp = from_dict(METHODS.params("binarize"), {"activations": False, "epochs": 6, "lr": 0.01})

    def robust(model):
        x, y = digits.test.x, digits.test.y
        ok = torch.ones_like(y, dtype=torch.bool)
        for mode in ("ste", "true"):
            a = create_attack("pgd", model, eps=0.1, steps=20, random_start=True, seed=0, batch_size=512,
                              grad_mode=mode)(x, y)
            with torch.no_grad():
                ok &= model(a).argmax(1) == y
        return float(ok.float().mean())

    std = METHODS.get("binarize")().apply(base, bp, training_context(digits, cfg, seed=0)).eval()
    at_cfg = TrainConfig(epochs=15, lr=0.05, batch_size=64, adversarial=adv)
    at = METHODS.get("binarize")().apply(base, bp, training_context(digits, at_cfg, seed=0)).eval()
    r_std, r_at = robust(std), robust(at)
    assert r_at > r_std + 0.15, (r_std, r_at)
