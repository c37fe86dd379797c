"""Masks as first-class state: kept through optimizer steps (momentum, weight decay),
through fine-tuning with ``fit`` and through a checkpoint save / load."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from sturdynet.core.params import Component, from_dict
from sturdynet.models import model_for_data
from sturdynet.models.small_cnn import SmallCNNParams
from sturdynet.core.masks import apply_masks, attach_mask, get_masks, iter_masks, mask_sparsity, remove_masks
from sturdynet.core.registry import METHODS
from sturdynet.train import TrainConfig, fit

UNSTRUCTURED = ["prune.global_magnitude", "prune.layerwise_magnitude", "prune.lamp", "prune.random"]


def _method(name: str, **kw):
    return METHODS.get(name)(), from_dict(METHODS.params(name), kw, name)


def _masked_zero(model: nn.Module) -> bool:
    return all(bool((getattr(m, p)[~mask] == 0).all()) for _, m, p, mask in iter_masks(model))


def test_attach_mask_zeroes_and_checks_shape():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(1.0, 7.0).view(2, 3))
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    attach_mask(lin, "weight", mask)
    assert torch.equal(lin.weight, torch.tensor([[1.0, 0.0, 3.0], [0.0, 5.0, 6.0]]))
    assert "weight_mask" in dict(lin.named_buffers())
    with pytest.raises(ValueError, match="does not match"):
        attach_mask(lin, "weight", torch.ones(3, 2, dtype=torch.bool))


def test_masks_survive_raw_optimizer_steps_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    method, params = _method("prune.global_magnitude", sparsity=0.7)
    model = method.apply(model, params)
    masks = {k: v.clone() for k, v in get_masks(model).items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1, nesterov=True)
    for _ in range(5):
        loss = model(torch.randn(32, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        # momentum and decay move pruned weights off zero until the masks are re-applied
        apply_masks(model)
        assert _masked_zero(model)
    assert all(torch.equal(masks[k], v) for k, v in get_masks(model).items())


@pytest.mark.parametrize("name", UNSTRUCTURED)
def test_masks_stay_applied_through_fit(name, digits):
    torch.manual_seed(0)
    model = model_for_data(Component("small_cnn", SmallCNNParams(width=8)), digits)
    method, params = _method(name, sparsity=0.8)
    pruned = method.apply(model, params)
    before = {k: v.clone() for k, v in get_masks(pruned).items()}
    cfg = TrainConfig(epochs=1, lr=0.1, momentum=0.9, weight_decay=5e-3, batch_size=128)
    fit(pruned, digits, cfg, seed=0)
    after = get_masks(pruned)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _masked_zero(pruned)
    assert mask_sparsity(pruned) == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize("name", UNSTRUCTURED)
def test_checkpoint_roundtrip_into_prepared_model(name, trained_cnn, digits):
    method, params = _method(name, sparsity=0.75)
    pruned = method.apply(trained_cnn, params)
    buf = io.BytesIO()
    torch.save(pruned.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert any(k.endswith("weight_mask") for k in state)
    fresh = model_for_data(Component("small_cnn", SmallCNNParams(width=8)), digits)
    shell = method.prepare(fresh, params)
    shell.load_state_dict(state, strict=True)
    for k, v in get_masks(pruned).items():
        assert torch.equal(get_masks(shell)[k], v)
    x = digits.test.x[:32]
    pruned.eval(), shell.eval()
    assert torch.equal(pruned(x), shell(x))
    # and training the reloaded model keeps the loaded masks
    fit(shell, digits, TrainConfig(epochs=1, lr=0.05, batch_size=128), seed=1)
    assert _masked_zero(shell)
    assert mask_sparsity(shell) == pytest.approx(mask_sparsity(pruned))


def test_pruning_twice_keeps_earlier_zeros(trained_cnn):
    m1, p1 = _method("prune.layerwise_magnitude", sparsity=0.5)
    first = m1.apply(trained_cnn, p1)
    m2, p2 = _method("prune.random", sparsity=0.5, seed=3)
    second = m2.apply(first, p2)
    for k, mask in get_masks(first).items():
        assert not bool((get_masks(second)[k] & ~mask).any()), "a pruned weight came back"


def test_apply_leaves_the_input_model_alone(trained_cnn):
    state = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    m, p = _method("prune.lamp", sparsity=0.9)
    m.apply(trained_cnn, p)
    assert state.keys() == trained_cnn.state_dict().keys()
    assert all(torch.equal(v, trained_cnn.state_dict()[k]) for k, v in state.items())


def test_remove_masks_keeps_zeros():
    lin = nn.Linear(4, 4)
    attach_mask(lin, "weight", torch.eye(4, dtype=torch.bool))
    remove_masks(lin)
    assert "weight_mask" not in dict(lin.named_buffers())
    assert int((lin.weight != 0).sum()) <= 4
