"""FAB / FAB-T (arXiv 1907.02044, 2003.01690): the box projection, minimal norms on a
linear model, agreement with torchattacks, gradient modes, EOT, the ensemble and the check."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, linprog, minimize
from test_attacks_algorithms import Linear2
from torch import nn

from sturdynet.attacks import create_attack, lp_norm
from sturdynet.attacks.fab import box_projection
from sturdynet.core.params import from_dict
from sturdynet.checks import CheckContext
from sturdynet.models import Normalize
from sturdynet.quant.binary.quantizers import SignActivation
from sturdynet.core.registry import CHECKS


def reference_projection(p: np.ndarray, w: np.ndarray, r: float, norm: str):
    """The minimal L-inf (linear program) or L2 (SLSQP) norm of d with <w, d> = r, p + d in [0, 1]."""
    n = p.size
    bounds = list(zip(-p, 1 - p))
    if norm == "linf":  # variables (d, t): min t with |d_i| <= t
        a_ub = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
        res = linprog(np.r_[np.zeros(n), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * n), A_eq=np.r_[w, 0.0][None],
                      b_eq=[r], bounds=bounds + [(0, None)])
        return res.fun if res.status == 0 else None
    if np.abs(w) @ np.where(w * r > 0, 1 - p, p) < abs(r):  # even the best corner falls short
        return None
    res = minimize(lambda d: d @ d, np.zeros(n), jac=lambda d: 2 * d, method="trust-constr", bounds=Bounds(-p, 1 - p),
                   constraints=[LinearConstraint(w[None], r, r)], options={"gtol": 1e-12, "xtol": 1e-14})
    assert abs(res.x @ w - r) < 1e-8
    return float(np.sqrt(res.x @ res.x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_projection_is_the_minimal_norm_solution(norm):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(24, 9, generator=g, dtype=torch.float64)
    p[:4, :3], p[4:8, :3] = 0.0, 1.0  # on the faces of the box
    w = torch.randn(24, 9, generator=g, dtype=torch.float64)
    w[8:12, :4] = 0.0
    r = torch.randn(24, generator=g, dtype=torch.float64) * 0.8
    r[12:14] = 50.0  # out of reach: the step goes to the corner
    d = box_projection(p, w, r, norm)
    assert ((p + d) >= -1e-12).all() and ((p + d) <= 1 + 1e-12).all()
    infeasible = 0
    for i in range(24):
        ref = reference_projection(p[i].numpy(), w[i].numpy(), float(r[i]), norm)
        if ref is None:
            infeasible += 1
            corner = torch.where(w[i] * r[i] > 0, 1.0, 0.0).double()
            assert torch.allclose((p[i] + d[i])[w[i] != 0], corner[w[i] != 0])
        else:
            assert float(w[i] @ d[i]) == pytest.approx(float(r[i]), abs=1e-9)
            got = float(lp_norm(d[i:i + 1], norm))
            assert got == pytest.approx(ref, rel=1e-5, abs=1e-9) and got <= ref + 1e-9  # interior point: ~1e-6
    assert infeasible >= 2


@pytest.fixture
def linear():
    return Linear2(), torch.full((4, 1, 8, 8), 0.5), torch.zeros(4, dtype=torch.long)


@pytest.mark.parametrize("name", ["fab", "fab-t"])
@pytest.mark.parametrize("norm,radius", [("linf", 0.1), ("l2", 0.8)])
def test_minimal_norm_on_a_linear_model(linear, name, norm, radius):
    """FAB's selling point: the adversarial example it finds is barely longer than the exact radius."""
    model, x, y = linear
    atk = create_attack(name, model, eps=float("inf"), norm=norm, steps=20)
    adv = atk(x, y)
    assert bool((model(adv).argmax(1) != y).all())
    assert torch.all(atk.min_norms >= radius * (1 - 1e-5)) and torch.all(atk.min_norms <= radius * 1.02)
    assert torch.allclose(lp_norm(adv - x, norm), atk.min_norms, rtol=1e-5)
    below = create_attack(name, model, eps=0.97 * radius, norm=norm, steps=20)
    assert torch.equal(below(x, y), x)  # nothing adversarial inside the ball: the clean point
    above = create_attack(name, model, eps=1.05 * radius, norm=norm, steps=20)(x, y)
    assert bool((model(above).argmax(1) != y).all())


def test_restarts_never_increase_the_norm_and_bad_params(trained_cnn, digits):
    x, y = digits.test.x[:80], digits.test.y[:80]
    one = create_attack("fab", trained_cnn, eps=0.05, steps=10, seed=1)
    three = create_attack("fab", trained_cnn, eps=0.05, steps=10, restarts=3, seed=1)
    one(x, y), three(x, y)
    assert bool((three.min_norms <= one.min_norms).all()) and bool((three.min_norms < one.min_norms).any())
    for bad in ({"steps": 0}, {"beta": 1.0}, {"eta": 0.9}, {"alpha_max": 1.5}):
        with pytest.raises(ValueError):
            create_attack("fab", trained_cnn, eps=0.1, **bad)
    with pytest.raises(ValueError, match="n_target_classes"):
        create_attack("fab-t", trained_cnn, eps=0.1, n_target_classes=0)


def test_targeted_fab_reaches_the_target(trained_cnn, digits):
    x, y = digits.test.x[:60], digits.test.y[:60]
    t = (y + 3) % 10
    atk = create_attack("fab", trained_cnn, eps=float("inf"), steps=30, targeted=True)
    adv = atk(x, y, t)
    hit = trained_cnn(adv).argmax(1) == t
    assert torch.equal(hit, torch.isfinite(atk.min_norms))  # every example returned reaches its target
    assert hit.float().mean() > 0.75  # measured 0.83: the step can oscillate between two rivals of t
    untargeted = create_attack("fab", trained_cnn, eps=float("inf"), steps=30)
    untargeted(x, y)
    assert float(atk.min_norms[hit].median()) >= float(untargeted.min_norms[hit].median())


def test_jacobian_and_eot_are_the_means_over_draws():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 4))

        def forward(self, x):
            return self.lin(x + 0.2 * torch.randn_like(x))

    model = Noisy().eval()
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    atk = create_attack("fab", model, eps=0.1, eot_iter=3)
    torch.manual_seed(7)
    f, g = atk.hyperplanes(x, y, None)
    torch.manual_seed(7)
    jac, val = [], []
    for _ in range(3):
        noise = 0.2 * torch.randn_like(x)
        j = torch.autograd.functional.jacobian(lambda inp: model.lin(inp + noise).sum(0), x)  # (4, N, 1, 8, 8)
        j = j.flatten(2).transpose(0, 1)
        jac.append(j - j[torch.arange(5), y][:, None])
        z = model.lin(x + noise).detach()
        val.append(z - z.gather(1, y[:, None]))
    assert torch.allclose(f, torch.stack(val).mean(0), atol=1e-6)
    assert torch.allclose(g, torch.stack(jac).mean(0), atol=1e-6)


@pytest.fixture(scope="module")
def sign_net(digits, fit_on_digits):
    torch.manual_seed(0)
    model = nn.Sequential(Normalize(digits.mean, digits.std), nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64),
                          SignActivation(), nn.Linear(64, 10))
    return fit_on_digits(model, 8)


def test_grad_mode_ste_attacks_through_the_estimator(sign_net):
    model, x, y, clean = sign_net
    x, y = x[clean][:60], y[clean][:60]
    true = create_attack("fab-t", model, eps=0.3, steps=10, n_target_classes=2, grad_mode="true")
    ste = create_attack("fab-t", model, eps=0.3, steps=10, n_target_classes=2, grad_mode="ste")
    true(x, y), ste(x, y)
    assert bool(torch.isinf(true.min_norms).all())  # zero true gradients: FAB never moves
    assert float(torch.isfinite(ste.min_norms).float().mean()) > 0.9
    assert all(m.grad_mode == "ste" for m in model.modules() if isinstance(m, SignActivation))


torchattacks_missing = pytest.mark.skipif(not __import__("importlib").util.find_spec("torchattacks"),
                                          reason="torchattacks is not installed")


@torchattacks_missing
@pytest.mark.parametrize("name,norm,eps", [("fab", "linf", 0.08), ("fab-t", "linf", 0.08), ("fab", "l2", 0.4),
                                           ("fab-t", "l2", 0.4)])
def test_matches_torchattacks(trained_cnn, digits, name, norm, eps):
    """One restart: both start at x and draw nothing random, so only float rounding can
    separate them (measured: identical); 1% (3-4 of the 359 images) absorbs rounding ties."""
    import torchattacks

    x, y = digits.test.x, digits.test.y
    clean = trained_cnn(x).argmax(1) == y

    def acc(adv):
        with torch.no_grad():
            return float(((trained_cnn(adv).argmax(1) == y) & clean).float().mean())

    ours = acc(create_attack(name, trained_cnn, eps=eps, norm=norm, steps=10)(x, y))
    theirs = acc(torchattacks.FAB(trained_cnn, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=10,
                                  multi_targeted=name == "fab-t", n_classes=10)(x, y))
    assert 0 < theirs < float(clean.float().mean())
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_ensemble_with_fab_t_reports_it(trained_cnn, digits):
    x, y = digits.test.x[:100], digits.test.y[:100]
    aa = create_attack("autoattack", trained_cnn, eps=0.08, steps=10, n_target_classes=3, n_queries=50,
                       attacks=("apgd-ce", "apgd-t", "fab-t", "square"), cascade=False)
    res = aa.run(x, y)
    assert [m.label for m in res.members] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    fab = create_attack("fab-t", trained_cnn, eps=0.08, steps=10, n_target_classes=3)
    idx = res.clean.nonzero().flatten()
    fooled = trained_cnn(fab(x[idx], y[idx])).argmax(1) != y[idx]
    assert torch.equal(res.fooled["fab-t"][idx], fooled)  # the member is the attack, on the same points
    assert 0 < int(fooled.sum()) < idx.numel()
    p = from_dict(CHECKS.params("robust"), {"eps": 0.08, "steps": 5, "n_target_classes": 2, "n_queries": 20,
                                             "samples": 60, "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"]})
    m = CHECKS.get("robust")(trained_cnn, digits, p, CheckContext())
    assert list(m["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert m["per_attack"]["fab-t"]["attacked"] == round(60 * m["per_attack"]["apgd-t"]["accuracy"])  # cascade
    assert m["per_attack"]["fab-t"]["accuracy"] <= m["per_attack"]["apgd-t"]["accuracy"]


@pytest.mark.parametrize("attack", ["fab", "fab-t"])
def test_fab_check_radii_from_one_run(trained_cnn, digits, attack):
    eps = [0.0, 0.05, 0.08, 1.0]
    p = from_dict(CHECKS.params("fab"), {"eps": eps, "steps": 20, "samples": 80, "attack": attack,
                                          "n_target_classes": 3})
    m = CHECKS.get("fab")(trained_cnn, digits, p, CheckContext())
    accs = [c["accuracy"] for c in m["curve"]]
    assert accs[0] == pytest.approx(m["clean_accuracy"]) and accs == sorted(accs, reverse=True)
    assert accs[-1] == 0.0 and m["found_fraction"] == 1.0 and 0 < m["median_linf"] < 1
    assert m["attack"] == attack and m["grad_mode"] == "true"
    x, y = digits.test.x[:80], digits.test.y[:80]  # the bounded attack at one eps gives the same accuracy
    kw = {"n_target_classes": 3} if attack == "fab-t" else {}
    adv = create_attack(attack, trained_cnn, eps=0.08, steps=20, **kw)(x, y)
    assert accs[2] == pytest.approx(float((trained_cnn(adv).argmax(1) == y).float().mean()))
