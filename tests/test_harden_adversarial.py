"""Adversarial training methods: eps-ball, TRADES known answer, PART budgets, recipes."""
import math

import pytest
import torch

from sturdynet.core.params import Component
from sturdynet.models import model_for_data
from sturdynet.models.small_cnn import SmallCNNParams
from sturdynet.run.recipe import parse_recipe
from sturdynet.core.registry import ADVERSARIAL
from sturdynet.train import TrainConfig, evaluate_accuracy, fit
from sturdynet.defenses.adversarial.base import AdversarialCallback
from sturdynet.defenses.adversarial.cam import grad_cam
from sturdynet.defenses.adversarial.part import PART, important_pixels, pixel_budget
from sturdynet.defenses.adversarial.trades import trades_kl, trades_loss
from sturdynet.core.callbacks import Callback


def small(digits, seed=0):
    torch.manual_seed(seed)
    return model_for_data(Component("small_cnn", SmallCNNParams(width=4)), digits)


class Spy(Callback):
    """Records each training batch next to the clean batch it came from."""

    def __init__(self, adv):
        self.adv, self.max_dist, self.n = adv, 0.0, 0

    def on_after_backward(self, state):
        d = (state.x - self.adv.clean_x).abs().amax()
        self.max_dist = max(self.max_dist, float(d))
        self.n += 1
        assert float(state.x.min()) >= 0 and float(state.x.max()) <= 1


@pytest.mark.parametrize("method", ["pgd", "trades", "fgsm_rs", "part"])
def test_training_examples_inside_eps_ball(digits, method):
    eps = 0.1
    adv = ADVERSARIAL.get(method)(eps=eps, steps=1 if method == "fgsm_rs" else 5)
    spy = Spy(adv)
    model = small(digits)
    hist = fit(model, digits, TrainConfig(epochs=1, batch_size=256), seed=0, callbacks=[adv, spy])
    assert spy.n == math.ceil(len(digits.train) / 256)
    assert 0.5 * eps < spy.max_dist <= eps + 1e-6
    assert hist[0]["adv_max_linf"] == pytest.approx(spy.max_dist, abs=1e-6)


def test_escaping_the_ball_is_caught(digits):
    class Bad(AdversarialCallback):
        def craft(self, state, x, y):
            return (x + 2 * self.eps).clamp(0, 1)

    with pytest.raises(AssertionError, match="left the eps-ball"):
        fit(small(digits), digits, TrainConfig(epochs=1, batch_size=512), seed=0, callbacks=[Bad(eps=0.05)])


def test_trades_loss_known_answer():
    clean = torch.tensor([[0.0, 0.0]])
    adv = torch.tensor([[math.log(3.0), 0.0]])  # softmax -> (0.75, 0.25)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert float(trades_kl(clean, adv)) == pytest.approx(kl, rel=1e-6)
    loss = trades_loss(clean, adv, torch.tensor([0]), beta=6.0)
    assert float(loss) == pytest.approx(math.log(2) + 6.0 * kl, rel=1e-6)
    assert float(trades_kl(adv, adv)) == pytest.approx(0.0, abs=1e-7)


def test_part_budget_eps_on_marked_pixels_lower_elsewhere():
    cam = torch.tensor([[[[0.0, 1.0], [3.0, 0.0]]]])  # mean 1: only the 3 is above average
    assert important_pixels(cam).tolist() == [[[[False, False], [True, False]]]]
    b = pixel_budget(cam, 8 / 255, 7 / 255)
    assert torch.allclose(b, torch.tensor([[[[7, 7], [8, 7]]]]) / 255)


def test_part_crafted_perturbation_respects_pixel_budget(trained_cnn, digits):
    part = PART(eps=0.2, eps_low=0.05, steps=5)

    class S:  # the bits of TrainState that craft() reads
        model, epoch, generator = trained_cnn, 0, torch.Generator().manual_seed(0)

    x, y = digits.test.x[:64], digits.test.y[:64]
    with part.crafting(trained_cnn):
        x_adv = part.craft(S, x, y)
    budget = part.eps_map(S, x)
    delta = (x_adv - x).abs()
    assert torch.all(delta <= budget + 1e-6)
    important = budget == 0.2
    assert important.any() and (~important).any()
    assert float(delta[~important].max()) <= 0.05 + 1e-6
    assert float(delta[important].max()) > 0.05  # the full budget is used where it is allowed


def test_grad_cam_known_answer():
    # Class-1 logit = the top-left activation: the channel weight is the spatial mean of
    # its gradient, (1 + 0 + 0 + 0) / 4, so the map is 0.25 * the activation map.
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[2].weight.zero_()
        net[2].weight[1, 0] = 1.0
    x = torch.tensor([[[[0.9, 0.5], [0.5, 0.5]]]])
    cam = grad_cam(net, x, torch.tensor([1]))
    assert cam.shape == (1, 1, 2, 2)
    assert torch.allclose(cam, 0.25 * x)


def test_pgd_at_improves_robustness_on_digits(digits):
    from sturdynet.attacks import create_attack
    from sturdynet.core.tensors import correct_mask

    std, rob = small(digits, 1), small(digits, 1)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05)
    fit(std, digits, cfg, seed=0)
    fit(rob, digits, cfg.__class__(**{**cfg.__dict__, "adversarial": Component(
        "pgd", ADVERSARIAL.params("pgd")(eps=0.1, steps=3))}), seed=0)
    x, y = digits.test.x, digits.test.y
    accs = []
    for m in (std, rob):
        x_adv = create_attack("pgd", m, eps=0.1, steps=10)(x, y)
        accs.append(float(correct_mask(m, x_adv, y).float().mean()))
    assert accs[1] > accs[0] + 0.15
    assert evaluate_accuracy(rob, digits.test)["accuracy"] > 0.5  # a 4-channel CNN after 4 epochs


def test_recipe_adversarial_settings():
    r = parse_recipe({"name": "x", "data": {"name": "digits"}, "model": {"name": "small_cnn"},
                      "train": {"epochs": 1, "adversarial": {"method": "trades", "eps": 0.1, "beta": 3.0}},
                      "variants": [{"name": "ft", "method": "prune.global_magnitude", "finetune_epochs": 1,
                                    "finetune": {"adversarial": {"method": "part", "eps": 0.1, "eps_low": 0.05}}}],
                      "evaluate": [{"check": "clean"}]})
    assert r.train.adversarial.name == "trades" and r.train.adversarial.params.beta == 3.0
    assert r.variants[0].finetune.adversarial.name == "part"
    with pytest.raises(ValueError, match="eps_low"):
        parse_recipe({"name": "x", "data": {"name": "digits"}, "model": {"name": "small_cnn"},
                      "train": {"adversarial": {"method": "part", "eps": 0.05, "eps_low": 0.1}},
                      "variants": [{"name": "d"}], "evaluate": [{"check": "clean"}]})
