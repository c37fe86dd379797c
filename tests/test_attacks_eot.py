"""Expectation over transformation (EOT) for models with a random forward pass."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sturdynet.attacks import create_attack
from sturdynet.core.params import ConfigError, from_dict
from sturdynet.checks import CheckContext
from sturdynet.core.registry import CHECKS


class NoisyInput(nn.Module):
    """A randomised defence: Gaussian noise on the input (global RNG), then a fixed MLP."""

    def __init__(self, sigma: float = 0.3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.l1 = nn.Linear(64, 32)
        self.l2 = nn.Linear(32, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.sigma = sigma
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        x = x.flatten(1)
        return self.l2(torch.relu(self.l1(x + self.sigma * torch.randn_like(x))))


@pytest.fixture
def noisy():
    model = NoisyInput().eval()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.l2(torch.relu(model.l1(x.flatten(1)))).argmax(1)
    return model, x, y


def test_eot_gradient_is_the_mean_over_draws(noisy):
    """Known answer: loss, gradient and logits are the plain means over eot_iter draws."""
    model, x, y = noisy
    atk = create_attack("pgd", model, eps=0.1, eot_iter=5)
    torch.manual_seed(7)
    loss, grad, logits = atk.loss_and_grad(x, atk.ce(y, None))
    torch.manual_seed(7)
    losses, grads, zs = [], [], []
    for _ in range(5):
        xi = x.clone().requires_grad_(True)
        z = model(xi)
        li = F.cross_entropy(z, y, reduction="none")
        grads.append(torch.autograd.grad(li.sum(), xi)[0])
        losses.append(li.detach())
        zs.append(z.detach())
    assert torch.allclose(loss, torch.stack(losses).mean(0), atol=1e-6)
    assert torch.allclose(grad, torch.stack(grads).mean(0), atol=1e-7)
    assert torch.allclose(logits, torch.stack(zs).mean(0), atol=1e-6)


def test_eot_gradient_approaches_the_expected_gradient(noisy):
    """The EOT estimate of E[grad] aligns with it far better than one draw does."""
    model, x, y = noisy
    torch.manual_seed(0)
    ref = create_attack("fgsm", model, eps=0.1, eot_iter=2000)
    _, expected, _ = ref.loss_and_grad(x, ref.ce(y, None))

    def cosine(k: int) -> float:
        atk = create_attack("fgsm", model, eps=0.1, eot_iter=k)
        _, g, _ = atk.loss_and_grad(x, atk.ce(y, None))
        return float(F.cosine_similarity(g.flatten(1), expected.flatten(1)).mean())

    one, many = cosine(1), cosine(50)
    assert many > 0.9 and many > one + 0.1, (one, many)


@pytest.mark.parametrize("name,kw,passes", [("fgsm", {}, 3), ("pgd", {"steps": 2}, 3 * 2),
                                            ("apgd", {"steps": 2}, None), ("square", {"n_queries": 5}, None),
                                            ("cw", {"steps": 2, "binary_steps": 1}, 3 * 2)])
def test_every_attack_spends_eot_iter_passes(noisy, name, kw, passes):
    """Each gradient or score costs eot_iter forward passes (exact counts where the attack's
    pass count is fixed, at least eot_iter times the plain attack's otherwise)."""
    model, x, y = noisy
    counts = {}
    for k in (1, 3):
        model.calls = 0
        torch.manual_seed(0)
        create_attack(name, model, eps=0.5 if name == "cw" else 0.05, norm="l2" if name == "cw" else "linf",
                      eot_iter=k, **kw)(x, y)
        counts[k] = model.calls
    if passes is not None:
        assert counts[3] == passes * x.shape[0]
    assert counts[3] >= 2 * counts[1]


def test_deterministic_model_unchanged_by_eot(trained_cnn, digits):
    x, y = digits.test.x[:32], digits.test.y[:32]
    a = create_attack("pgd", trained_cnn, eps=0.1, steps=4, seed=2)(x, y)
    b = create_attack("pgd", trained_cnn, eps=0.1, steps=4, seed=2, eot_iter=3)(x, y)
    assert torch.allclose(a, b, atol=1e-6)


def test_check_flag_names_eot(noisy, digits):
    model, _, _ = noisy
    for eot, words in ((1, "set eot_iter"), (4, "EOT) over 4 passes")):
        p = from_dict(CHECKS.params("fgsm"), {"eps": 0.05, "samples": 32, "eot_iter": eot})
        m = CHECKS.get("fgsm")(model, digits, p, CheckContext())
        flag = [f for f in m["flags"] if f.startswith("random_forward")]
        assert len(flag) == 1 and words in flag[0], flag


def test_bad_eot_iter():
    with pytest.raises(ValueError, match=r"eot_iter: must be >= 1"):
        create_attack("pgd", NoisyInput(), eps=0.1, eot_iter=0)
    with pytest.raises(ConfigError, match="eot_iter"):
        from_dict(CHECKS.params("robust"), {"eot_iter": 0})
