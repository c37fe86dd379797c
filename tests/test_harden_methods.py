"""HYDRA and defensive distillation."""
import math

import pytest
import torch
from torch import nn

from sturdynet.train.context import training_context
from sturdynet.core.params import Component
from sturdynet.defenses.distill import DefensiveDistillation, DistillParams, soft_cross_entropy
from sturdynet.defenses.hydra import Hydra, HydraParams, ScoreMask, topk_mask
from sturdynet.train import TrainConfig, evaluate_accuracy


def ctx_for(digits, epochs=1):
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05)
    return training_context(digits, cfg, seed=0)


def test_score_init_is_the_papers_scaled_rule():
    w = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    sm = ScoreMask(w, density=0.5)
    assert torch.allclose(sm.scores.detach(), w * math.sqrt(6 / 2) / 4.0)
    assert sm.k == 2
    out = sm(w)
    assert torch.equal(out, torch.tensor([[0.0, -2.0], [0.0, 4.0]]))


def test_topk_mask_known_answer():
    s = torch.tensor([0.1, -0.9, 0.5, 0.0])
    assert topk_mask(s, 2).tolist() == [False, True, True, False]


@pytest.mark.parametrize("sparsity", [0.9, 0.95, 0.99])
def test_hydra_exact_density_per_layer_and_weights_frozen(trained_cnn, digits, sparsity):
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    p = Hydra().apply(trained_cnn, HydraParams(sparsity=sparsity, score_epochs=1), ctx_for(digits))
    for name, m in p.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n = m.weight.numel()
            assert int(m.weight_mask.sum()) == round((1 - sparsity) * n), name
            orig = before[f"{name}.weight"]
            # kept weights are the original ones: score training never changes weights
            assert torch.equal(m.weight[m.weight_mask], orig[m.weight_mask])
            assert torch.all(m.weight[~m.weight_mask] == 0)
    for k, v in trained_cnn.state_dict().items():
        assert torch.equal(v, before[k])  # the caller's model is untouched
    assert all(p.requires_grad for p in p.parameters())


def test_hydra_scores_learn_something(trained_cnn, digits):
    no_train = Hydra().apply(trained_cnn, HydraParams(sparsity=0.9, score_epochs=0), ctx_for(digits))
    trained = Hydra().apply(trained_cnn, HydraParams(sparsity=0.9, score_epochs=2), ctx_for(digits))
    diff = sum(int((a.weight_mask != b.weight_mask).sum()) for a, b in zip(no_train.modules(), trained.modules())
               if hasattr(a, "weight_mask"))
    assert diff > 0
    acc_magnitude_like = evaluate_accuracy(no_train, digits.test)["accuracy"]
    acc_hydra = evaluate_accuracy(trained, digits.test)["accuracy"]
    assert acc_hydra >= acc_magnitude_like - 0.02


def test_soft_cross_entropy_known_answer():
    logits = torch.tensor([[0.0, 0.0]])
    assert float(soft_cross_entropy(logits, torch.tensor([[0.3, 0.7]]))) == pytest.approx(math.log(2))


def test_distilled_student_has_inflated_logits(trained_cnn, digits):
    student = DefensiveDistillation().apply(trained_cnn, DistillParams(temperature=10, teacher_epochs=4,
                                                                       student_epochs=6), ctx_for(digits))
    assert evaluate_accuracy(student, digits.test)["accuracy"] > 0.8
    with torch.no_grad():
        spread_base = trained_cnn(digits.test.x).std(1).mean()
        spread_student = student(digits.test.x).std(1).mean()
    assert spread_student > 3 * spread_base


def test_robust_ticket_trains_adversarially_and_reaches_sparsity(trained_cnn, digits):
    from sturdynet.defenses.robust_ticket import RobustTicket, RobustTicketParams
    from sturdynet.core.masks import mask_sparsity
    from sturdynet.core.registry import ADVERSARIAL

    seen = []
    ctx = ctx_for(digits)
    inner_fit = ctx.fit

    def spy_fit(m, cfg, **kw):
        seen.append(cfg.adversarial.name if cfg.adversarial else None)
        return inner_fit(m, cfg, **kw)

    ctx.fit = spy_fit
    adv = Component("pgd", ADVERSARIAL.params("pgd")(eps=0.1, steps=2))
    out = RobustTicket().apply(trained_cnn, RobustTicketParams(rounds=2, sparsity=0.75, epochs=1, adversarial=adv,
                                                              early_bird=False), ctx)
    assert seen == ["pgd", "pgd", "pgd"]  # the dense run and both rounds
    assert mask_sparsity(out) == pytest.approx(0.75, abs=0.01)
    assert ctx.log["robust_ticket"]["adversarial"]["method"] == "pgd"


def test_hydra_score_gradient_goes_through_abs():
    """The mask ranks |S|, so S gets the straight-through gradient times sign(S): a weight the
    loss wants kept raises |S| whatever the sign of its score (issue 15: without the sign,
    negative scores were pushed out of the mask)."""
    import torch

    from sturdynet.defenses.hydra import ScoreMask

    sm = ScoreMask(torch.tensor([1.0, 1.0]), density=0.5)
    with torch.no_grad():
        sm.scores.copy_(torch.tensor([-0.5, 0.2]))
    (-sm(torch.tensor([1.0, 1.0])).sum()).backward()  # dL/dmask = -1 for both weights
    assert sm.scores.grad.tolist() == [1.0, -1.0]  # descent grows |S| for both
