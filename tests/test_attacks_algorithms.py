"""Known answers for the attack algorithms on hand-made tensors and linear models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sturdynet.attacks import create_attack, dlr_loss, dlr_targeted_loss, lp_norm, margin, project
from sturdynet.attacks.apgd import checkpoints
from sturdynet.attacks.square import eta, p_schedule


def test_margin_and_dlr_known_answers():
    z = torch.tensor([[5.0, 3.0, 1.0, 0.0], [1.0, 4.0, 2.0, 0.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(margin(z, y), torch.tensor([2.0, -3.0]))
    # DLR = -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-2.0 / 4.0, 3.0 / 3.0]))
    t = torch.tensor([1, 2])
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    assert torch.allclose(dlr_targeted_loss(z, y, t), torch.tensor([-2.0 / 4.5, -(1.0 - 2.0) / 3.5]))
    with pytest.raises(ValueError, match="3 classes"):
        dlr_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def test_apgd_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]


def test_square_schedule_and_pattern():
    assert p_schedule(0, 10000, 0.8) == 0.8
    assert p_schedule(11, 10000, 0.8) == 0.4
    assert p_schedule(8001, 10000, 0.8) == pytest.approx(0.8 / 512)
    assert p_schedule(5, 1000, 0.8) == 0.4  # rescaled: 5 / 1000 * 10000 = 50 > 10
    for s in (1, 3, 5, 6):
        e = eta(s)
        assert e.shape == (s, s) and float(e.norm()) == pytest.approx(1.0, abs=1e-5)
        assert (e[s // 2:] < 0).all() and (e[: s // 2] > 0).all()
        if s % 2:
            assert torch.allclose(e, e.flip(1))  # symmetric left-right
    e = eta(5)
    assert float(e[4, 2].abs()) > float(e[4, 0].abs())  # peaks at the centre of each half


def test_project():
    d = torch.tensor([[[[3.0, -4.0]]]])
    assert torch.allclose(project(d, 1.0, "linf"), torch.tensor([[[[1.0, -1.0]]]]))
    assert torch.allclose(project(d, 1.0, "l2"), d / 5)
    assert torch.allclose(project(d, 10.0, "l2"), d)
    assert torch.allclose(lp_norm(d, "l2"), torch.tensor([5.0]))


class Linear2(nn.Module):
    """Two-class linear model on 8x8 images with a known robust radius at x = 0.5."""

    def __init__(self, m: float = 0.64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter((torch.randint(0, 2, (64,), generator=g).float() * 2 - 1) * 0.1)
        self.m = m

    def forward(self, x):
        s = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([torch.full_like(s, self.m / 2), s - self.m / 2], 1)  # class 0 wins by m - s


@pytest.fixture
def linear():
    model = Linear2()
    x = torch.full((4, 1, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    return model, x, y  # radius: linf m / ||w||_1 = 0.1, l2 m / ||w||_2 = 0.8


def test_fgsm_known_answer(linear):
    model, x, y = linear
    out = create_attack("fgsm", model, eps=0.05)(x, y)
    assert torch.allclose(out.flatten(1), 0.5 + 0.05 * model.w.detach().sign().expand(4, 64))


@pytest.mark.parametrize("name,norm,kw,above", [
    ("fgsm", "linf", {}, 1.3), ("pgd", "linf", {"steps": 10}, 1.3), ("apgd", "linf", {"steps": 20}, 1.3),
    ("pgd", "l2", {"steps": 20}, 1.3), ("apgd", "l2", {"steps": 20}, 1.3), ("fgsm", "l2", {}, 1.3),
    ("square", "linf", {"n_queries": 400}, 1.3),
    ("square", "l2", {"n_queries": 400}, 2.0),  # random search in L2 needs more room than gradients
])
def test_attacks_respect_the_exact_radius(linear, name, norm, kw, above):
    """Below the exact radius no attack may succeed; well above it every attack must."""
    model, x, y = linear
    radius = 0.1 if norm == "linf" else 0.8
    for eps, fooled in ((0.8 * radius, False), (above * radius, True)):
        adv = create_attack(name, model, eps=eps, norm=norm, **kw)(x, y)
        with torch.no_grad():
            pred = model(adv).argmax(1)
        assert bool((pred != y).all()) == fooled, (name, norm, eps)


def test_cw_finds_the_minimum_norm(linear):
    model, x, y = linear
    atk = create_attack("cw", model, steps=200, binary_steps=8, c_init=0.1, lr=0.02)
    atk(x, y)
    assert torch.all(atk.min_norms < 0.8 * 1.06) and torch.all(atk.min_norms >= 0.8 * 0.999)


def test_pgd_more_steps_never_weaker(trained_cnn, digits):
    x, y = digits.test.x[:200], digits.test.y[:200]
    fooled = []
    for steps in (2, 5, 15):
        adv = create_attack("pgd", trained_cnn, eps=0.1, steps=steps, alpha=0.02, seed=3)(x, y)
        with torch.no_grad():
            fooled.append(trained_cnn(adv).argmax(1) != y)
    assert fooled[0].sum() < fooled[2].sum()
    for a, b in zip(fooled, fooled[1:]):
        assert bool((a <= b).all())  # every sample fooled with fewer steps stays fooled


def test_pgd_restarts_never_weaker(trained_cnn, digits):
    x, y = digits.test.x[:200], digits.test.y[:200]
    res = []
    for r in (1, 3):
        adv = create_attack("pgd", trained_cnn, eps=0.08, steps=5, restarts=r, seed=1)(x, y)
        with torch.no_grad():
            res.append(trained_cnn(adv).argmax(1) != y)
    assert bool((res[0] <= res[1]).all())


def test_targeted_pgd_and_apgd_reach_targets(trained_cnn, digits):
    x, y = digits.test.x[:64], digits.test.y[:64]
    t = (y + 1) % 10
    for name in ("pgd", "apgd"):
        adv = create_attack(name, trained_cnn, eps=0.3, steps=20, targeted=True)(x, y, t)
        with torch.no_grad():
            hit = (trained_cnn(adv).argmax(1) == t).float().mean()
        assert hit > 0.9, name


def test_apgd_t_and_autoattack_at_least_as_strong_as_apgd_ce(trained_cnn, digits):
    x, y = digits.test.x[:150], digits.test.y[:150]

    def acc(adv):
        with torch.no_grad():
            return float((trained_cnn(adv).argmax(1) == y).float().mean())

    ce = acc(create_attack("apgd", trained_cnn, eps=0.1, steps=20)(x, y))
    aa = create_attack("autoattack", trained_cnn, eps=0.1, steps=20, n_target_classes=3, n_queries=50)
    res = aa.run(x, y)
    assert float(res.robust.float().mean()) <= ce + 1e-6
    assert acc(res.x_adv) == pytest.approx(float(res.robust.float().mean()))
    assert [m.label for m in res.members] == ["apgd-ce", "apgd-t", "square"]


class CountingModel(nn.Module):
    """Wraps a model and counts the samples it is called on (in eval mode, like the model)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.samples = 0
        self.eval()

    def forward(self, x):
        self.samples += x.shape[0]
        return self.inner(x)


def test_pgd_costs_exactly_steps_passes_and_falls_back_to_the_last_iterate(trained_cnn, digits):
    """Without restarts PGD runs ``steps`` forward passes per sample, no more; a sample
    that no judged iterate fools gets the last iterate of a plain PGD loop."""
    x, y = digits.test.x[:64], digits.test.y[:64]
    eps, alpha, steps = 0.08, 0.02, 6
    model = CountingModel(trained_cnn)
    adv = create_attack("pgd", model, eps=eps, steps=steps, alpha=alpha, seed=5)(x, y)
    assert model.samples == steps * x.shape[0]
    # the same loop by hand: same random start (the attack's seeded generator), same projection
    g = torch.Generator().manual_seed(5)
    xa = (x + (2 * torch.rand(x.shape, generator=g) - 1) * eps).clamp(0, 1)
    fooled_early = torch.zeros(x.shape[0], dtype=torch.bool)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        logits = trained_cnn(xa)
        fooled_early |= logits.argmax(1) != y
        grad, = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="sum"), xa)
        xa = (x + (xa.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    assert 0 < int(fooled_early.sum()) < x.shape[0]
    assert torch.equal(adv[~fooled_early], xa[~fooled_early])
    with torch.no_grad():
        assert bool((trained_cnn(adv[fooled_early]).argmax(1) != y[fooled_early]).all())


def test_pgd_restarts_judge_the_last_iterate(trained_cnn, digits):
    """With restarts the last iterate is judged once per restart on the samples not yet fooled."""
    x, y = digits.test.x[:64], digits.test.y[:64]
    model = CountingModel(trained_cnn)
    create_attack("pgd", model, eps=0.08, steps=4, restarts=2, seed=1)(x, y)
    one = CountingModel(trained_cnn)
    create_attack("pgd", one, eps=0.08, steps=4, restarts=1, seed=1)(x, y)
    assert one.samples == 4 * 64
    assert 4 * 64 < model.samples <= 2 * 5 * 64
