"""Invariants every registered attack must keep (parametrised over ATTACKS.names())."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sturdynet.attacks import create_attack, lp_norm
from sturdynet.core.registry import ATTACKS

# Small budgets so that the whole file runs in seconds; every attack must accept them.
FAST = {
    "pgd": {"steps": 3},
    "apgd": {"steps": 5},
    "apgd-t": {"steps": 4, "n_target_classes": 2},
    "square": {"n_queries": 15},
    "cw": {"steps": 5, "binary_steps": 2},
    "fab": {"steps": 4, "restarts": 2},
    "fab-t": {"steps": 3, "n_target_classes": 2, "restarts": 2},
    "autoattack": {"steps": 3, "n_target_classes": 2, "n_queries": 10},
    "transfer": {"attack_kwargs": {"steps": 2}},
}


def tiny_model(seed: int = 0, bn: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)]
    return nn.Sequential(*layers)


def make(name: str, model: nn.Module, eps: float, norm: str, **kw):
    extra = dict(FAST.get(name, {}))
    if name == "transfer":
        extra["surrogate"] = tiny_model(seed=1)
    return create_attack(name, model, eps=eps, norm=norm, **extra, **kw)


def norms_of(name: str):
    return ATTACKS.get(name).norms


def cases():
    for name in ATTACKS.names():
        for norm in norms_of(name):
            yield name, norm


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 1, 8, 8, generator=g)
    x[:3] = 0.0  # corners of the box
    x[3:5] = 1.0
    y = torch.randint(0, 10, (12,), generator=g)
    return x, y


@pytest.mark.parametrize("name,norm", list(cases()))
def test_eps_ball_and_box(name, norm, batch):
    x, y = batch
    model = tiny_model()
    eps = 0.3 if norm == "linf" else 1.0
    x_adv = make(name, model, eps, norm)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(lp_norm(x_adv - x, norm).max()) <= eps + 1e-5


@pytest.mark.parametrize("name", ATTACKS.names())
def test_never_changes_model_or_inputs(name, batch):
    x, y = batch
    model = tiny_model()
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    x0, y0 = x.clone(), y.clone()
    make(name, model, 0.2 if "linf" in norms_of(name) else 1.0, norms_of(name)[0])(x, y)
    assert model.training
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # weights and BN running stats
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_deterministic_under_seed(name, batch):
    x, y = batch
    model = tiny_model()
    norm = norms_of(name)[0]
    eps = 0.2 if norm == "linf" else 1.0
    a = make(name, model, eps, norm, seed=5)(x, y)
    b = make(name, model, eps, norm, seed=5)(x, y)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_eps_zero_returns_input(name, batch):
    x, y = batch
    norm = norms_of(name)[0]
    out = make(name, tiny_model(), 0.0, norm)(x, y)
    assert torch.equal(out, x)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_bad_inputs(name, batch):
    x, y = batch
    norm = norms_of(name)[0]
    atk = make(name, tiny_model(), 0.1, norm)
    with pytest.raises(ValueError, match="shape"):
        atk(x[0], y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        atk(x * 2 + 0.5, y)
    with pytest.raises(ValueError, match="y must have shape"):
        atk(x, y[:-1])
    with pytest.raises(ValueError, match="eps"):
        make(name, tiny_model(), -0.1, norm)
    with pytest.raises(ValueError, match="norm"):
        make(name, tiny_model(), 0.1, "l7")


def test_unknown_attack_suggests_nearest_names():
    with pytest.raises(ValueError, match="unknown attack 'pgdd' \\(did you mean pgd"):
        create_attack("pgdd", tiny_model())


def test_batching_does_not_change_deterministic_attack(batch):
    x, y = batch
    model = tiny_model()
    a = create_attack("fgsm", model, eps=0.1, batch_size=5)(x, y)
    b = create_attack("fgsm", model, eps=0.1, batch_size=64)(x, y)
    assert torch.allclose(a, b, atol=1e-6)


def test_targeted_needs_targets(batch):
    x, y = batch
    atk = create_attack("pgd", tiny_model(), eps=0.1, targeted=True, steps=2)
    with pytest.raises(ValueError, match="target labels"):
        atk(x, y)
    with pytest.raises(ValueError, match="no targeted mode"):
        create_attack("apgd-t", tiny_model(), eps=0.1, targeted=True)
    with pytest.raises(ValueError, match="norm"):
        create_attack("cw", tiny_model(), eps=0.1, norm="linf")


def test_transfer_needs_surrogate():
    with pytest.raises(ValueError, match="surrogate"):
        create_attack("transfer", tiny_model(), eps=0.1)
