import math

import pytest
import torch
from torch import nn

from sturdynet.core.params import Component
from sturdynet.models import model_for_data
from sturdynet.models.small_cnn import SmallCNNParams
from sturdynet.core.masks import attach_mask
from sturdynet.train import Callback, TrainConfig, TrainingDiverged, evaluate_accuracy, fit
from sturdynet.train.loop import lr_factor


def make(digits):
    torch.manual_seed(1)
    return model_for_data(Component("small_cnn", SmallCNNParams(width=4)), digits)


def test_lr_schedule_known_values():
    # 2 warm-up steps of 10: 0.5, 1.0, then cosine over the remaining 8 steps.
    assert lr_factor(0, 10, 2, "cosine") == 0.5
    assert lr_factor(1, 10, 2, "cosine") == 1.0
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0)
    assert lr_factor(7, 10, 0, "constant") == 1.0


def test_deterministic_under_seed(digits):
    cfg = TrainConfig(epochs=1, batch_size=128)
    a, b = make(digits), make(digits)
    ha = fit(a, digits, cfg, seed=3)
    hb = fit(b, digits, cfg, seed=3)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert ha[0]["train_loss"] == hb[0]["train_loss"]


def test_learns_digits(trained_cnn, digits):
    assert evaluate_accuracy(trained_cnn, digits.test)["accuracy"] > 0.9


def test_masks_survive_training_with_momentum_and_decay(digits):
    model = make(digits)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1]
    mask = torch.rand(conv.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    attach_mask(conv, "weight", mask)
    fit(model, digits, TrainConfig(epochs=1, batch_size=128, momentum=0.9, weight_decay=1e-3), seed=0)
    assert torch.all(conv.weight[~mask] == 0)
    assert torch.any(conv.weight[mask] != 0)


def test_nan_loss_raises(digits):
    model = make(digits)
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        fit(model, digits, TrainConfig(epochs=1, lr=1e30, batch_size=256, weight_decay=0), seed=0)


def test_callback_hooks_order_and_loss_override(digits):
    calls = []

    class Rec(Callback):
        def on_train_begin(self, s): calls.append("train_begin")
        def on_epoch_begin(self, s): calls.append("epoch_begin")
        def on_batch_begin(self, s): calls.append("batch_begin")
        def compute_loss(self, s):
            calls.append("loss")
            return (s.model(s.x) ** 2).mean() * 0
        def on_after_backward(self, s):
            calls.append("after_backward")
            assert all(p.grad is None or torch.all(p.grad == 0) for p in s.model.parameters())
        def on_step_end(self, s): calls.append("step_end")
        def on_epoch_end(self, s):
            calls.append("epoch_end")
            s.log["custom"] = 1.5
        def on_train_end(self, s): calls.append("train_end")

    model = make(digits)
    hist = fit(model, digits, TrainConfig(epochs=1, batch_size=2000), seed=0, callbacks=[Rec()])
    assert calls == ["train_begin", "epoch_begin", "batch_begin", "loss", "after_backward", "step_end",
                     "epoch_end", "train_end"]
    assert hist[0]["custom"] == 1.5 and math.isfinite(hist[0]["val_accuracy"])


def test_channels_last_inside_contiguous_outside(digits):
    """Conv models train channels_last on CPU (deterministic under a seed, close to the
    contiguous layout's result) and come back contiguous; the layout can be forced."""
    from sturdynet.core.tensors import memory_format_for

    cfg = TrainConfig(epochs=1, batch_size=128)
    seen = []

    class Layout(Callback):
        def on_batch_begin(self, state):
            w = next(p for p in state.model.parameters() if p.dim() == 4)
            seen.append((state.x.is_contiguous(memory_format=torch.channels_last),
                         w.is_contiguous(memory_format=torch.channels_last)))

    a, b, c = make(digits), make(digits), make(digits)
    assert memory_format_for(a, torch.device("cpu")) == torch.channels_last
    assert memory_format_for(nn.Linear(2, 2), torch.device("cpu")) == torch.contiguous_format
    fit(a, digits, cfg, seed=3, callbacks=[Layout()])
    assert seen and all(x and w for x, w in seen)
    assert all(p.is_contiguous() for p in a.parameters())
    fit(b, digits, cfg, seed=3)
    fit(c, digits, cfg, seed=3, channels_last=False)
    for pa, pb, pc in zip(a.state_dict().values(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb)
        if pa.is_floating_point():
            torch.testing.assert_close(pa, pc, rtol=1e-3, atol=1e-3)


def test_hooks_only_for_callbacks_that_define_them():
    from sturdynet.train.loop import hooked

    class OnlyStep(Callback):
        def on_step_end(self, state):
            pass

    inst = Callback()
    inst.on_epoch_end = lambda state: None  # an instance-level hook counts too
    h = hooked([OnlyStep(), inst])
    assert [type(c).__name__ for c in h["on_step_end"]] == ["OnlyStep"]
    assert h["on_epoch_end"] == [inst] and h["on_batch_begin"] == [] and h["compute_loss"] == []
