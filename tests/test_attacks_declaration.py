"""One declaration per attack (issue 11 part 2), torchattacks spellings and progress
callbacks (issue 17 part 6), and every submodule's train/eval flag restored (issue 14 item 5)."""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from sturdynet.attacks import create_attack
from sturdynet.attacks.base import COMMON_FIELDS
from sturdynet.checks import CheckContext
from sturdynet.core.params import ConfigError, from_dict
from sturdynet.core.registry import ATTACKS, CHECKS
from sturdynet.core.tensors import eval_mode, predict

from test_attacks_invariants import FAST as ATTACK_FAST, make, tiny_model
from test_checks_attacks import FAST as CHECK_FAST


def _own(pcls) -> set:
    return {f.name for f in dataclasses.fields(pcls)} - set(COMMON_FIELDS)


def test_checks_take_the_attack_declarations():
    """Each attack check's fields are the shared check fields plus its attacks' own fields."""
    assert _own(ATTACKS.params("pgd")) == {"steps", "alpha", "restarts", "random_start"}
    for check, attacks in {"fgsm": ["fgsm"], "pgd": ["pgd"], "square": ["square"], "cw": ["cw"],
                           "apgd": ["apgd", "apgd-t"], "fab": ["fab", "fab-t"], "robust": ["autoattack"]}.items():
        fields = {f.name for f in dataclasses.fields(CHECKS.params(check))}
        for a in attacks:
            assert _own(ATTACKS.params(a)) <= fields, (check, a)
    # folded attacks are chosen by one field, which keeps its old spelling
    assert from_dict(CHECKS.params("apgd"), {"loss": "dlr-t"}).loss == "dlr-t"
    assert from_dict(CHECKS.params("fab"), {"attack": "fab-t"}).attack == "fab-t"
    with pytest.raises(ConfigError, match="loss"):
        from_dict(CHECKS.params("apgd"), {"loss": "nope"})
    assert from_dict(CHECKS.params("cw"), {}).samples == 500  # check_defaults
    assert ATTACKS.get("square").gradient_free and not ATTACKS.get("fab").gradient_free


def test_a_new_attack_needs_only_its_own_file():
    """Registering an attack with its declaration gives it a recipe check, an ensemble slot
    and validated parameters, with no other file touched (run in a fresh interpreter)."""
    code = textwrap.dedent('''
        from dataclasses import dataclass
        import torch
        from sturdynet.attacks.base import Attack, AttackParams, to_ball
        from sturdynet.core.params import rng
        from sturdynet.core.registry import ATTACKS, CHECKS
        import sturdynet.checks

        @dataclass(frozen=True)
        class NoiseParams(AttackParams):
            tries: int = rng(1, None, default=3)

        print("noise" in CHECKS)

        @ATTACKS.register("noise", params=NoiseParams)
        class Noise(Attack):
            name = "noise"
            Params = NoiseParams
            gradient_free = True

            def perturb(self, x, y, target):
                return to_ball(x, x + self.eps * (2 * self.rand_like(x) - 1), self.eps, self.norm)

        from sturdynet.attacks import AutoAttack
        print(sorted(f for f in CHECKS.params("noise").__dataclass_fields__ if f == "tries"))
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        x, y = torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long)
        ens = AutoAttack(model, eps=0.1, attacks=("noise",))
        print([(m.label, m.gradient_free) for m in ens.members])
        try:
            ATTACKS.create("noise", model, tries=0)
        except ValueError as e:
            print(e)
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["False", "['tries']", "[('noise', True)]", "attack 'noise'.tries: must be >= 1, got 0"]


def test_torchattacks_spellings():
    m = tiny_model()
    assert create_attack("apgd-ce", m, eps=0.1, steps=3).loss == "ce"
    assert create_attack("apgd-dlr", m, eps=0.1, steps=3).loss == "dlr"
    assert create_attack("apgdt", m, eps=0.1, steps=3).name == "apgd-t"
    assert create_attack("pgdl2", m, eps=0.5).norm == "l2"
    assert create_attack("pgd", m, eps=0.1, n_restarts=3).restarts == 3
    assert create_attack("cw", m, c=0.5).c_init == 0.5
    with pytest.raises(ConfigError, match="fixed to 'dlr'"):
        create_attack("apgd-dlr", m, eps=0.1, loss="ce")
    with pytest.raises(ConfigError, match="given twice"):
        create_attack("pgd", m, eps=0.1, n_restarts=2, restarts=2)
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    a = create_attack("apgd-ce", m, eps=0.1, steps=3)(x, y)
    b = create_attack("apgd", m, eps=0.1, steps=3, loss="ce")(x, y)
    assert torch.equal(a, b)
    p = from_dict(CHECKS.params("robust"), {"attacks": ["apgd-ce", "apgdt", "square"]})
    assert p.attacks == ("apgd-ce", "apgdt", "square")
    with pytest.raises(ConfigError, match=r"attacks\[1\]"):
        from_dict(CHECKS.params("robust"), {"attacks": ["apgd-ce", "transfer"]})


@pytest.mark.parametrize("name", ["pgd", "apgd", "apgd-t", "square", "cw", "fab", "fab-t"])
def test_callback_sees_every_iteration(name):
    events = []
    model = tiny_model()
    x = torch.rand(5, 1, 8, 8)
    y = predict(model, x).argmax(1)  # every sample starts correct
    kw = dict(ATTACK_FAST.get(name, {}))
    atk = make(name, model, 0.3 if name != "cw" else float("inf"), "l2" if name == "cw" else "linf",
               callback=events.append, batch_size=3)
    atk(x, y)
    assert events and {"attack", "iteration", "batch", "samples", "fooled"} <= set(events[0])
    assert {e["batch"] for e in events} <= {0, 1} and all(e["attack"] == name for e in events)
    assert all(0 <= e["fooled"] <= e["samples"] for e in events)
    if name in ("pgd", "apgd", "square"):
        steps = kw.get("steps", kw.get("n_queries", 0) - 1)
        assert max(e["iteration"] for e in events) <= steps


def frozen_bn_model(base: nn.Module) -> nn.Module:
    """A model in training mode whose BatchNorm layers are frozen (eval), as fine-tuning does."""
    model = copy.deepcopy(base).train()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.eval()
    return model


def flags(model: nn.Module):
    return [m.training for m in model.modules()]


def test_eval_mode_restores_each_flag_also_after_an_error():
    model = frozen_bn_model(tiny_model())
    before = flags(model)
    assert True in before and False in before
    with eval_mode(model):
        assert not any(flags(model))
    assert flags(model) == before
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert flags(model) == before
    predict(model, torch.rand(3, 1, 8, 8))
    assert flags(model) == before


@pytest.mark.parametrize("name", sorted(ATTACK_FAST))
def test_attacks_restore_each_flag(name):
    model = frozen_bn_model(tiny_model())
    before = flags(model)
    make(name, model, 0.5 if name == "cw" else 0.1, "l2" if name == "cw" else "linf")(torch.rand(4, 1, 8, 8),
                                                                                     torch.arange(4))
    assert flags(model) == before


@pytest.mark.parametrize("name", sorted(CHECK_FAST) + ["clean"])
def test_checks_restore_each_flag(name, trained_cnn, digits):
    model = frozen_bn_model(trained_cnn)
    before = flags(model)
    params = {**CHECK_FAST.get(name, {}), "samples": 20}
    if name != "clean":
        params.setdefault("eps", 0.1)
    p = from_dict(CHECKS.params(name), params)
    CHECKS.get(name)(model, digits, p, CheckContext(models={"dense": model}))
    assert flags(model) == before
