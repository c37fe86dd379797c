"""OvSW (AGS, SAD) and the sign-flip diagnostic: invariants and a hand-computed toy sequence."""
import pytest
import torch
from torch import nn

from sturdynet.core.params import from_dict
from sturdynet.data.base import DataParams, make_bundle
from sturdynet.quant import QuantConv2d, QuantLinear
from sturdynet.quant.binary import BinaryWeightQuantizer, SignActivation
from sturdynet.quant.binary.ovsw import OvSW, adaptive_gradient_scale, silence_awareness_decay
from sturdynet.quant.binary.sign_flips import SignFlips, SignTracker
from sturdynet.train.config import TrainConfig
from sturdynet.train.loop import build_callbacks, fit


def test_ags_lifts_every_channel_ratio_to_delta():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3, requires_grad=True)
    g = torch.randn(8, 3, 3, 3) * torch.logspace(-5, 1, 8).view(-1, 1, 1, 1)
    w.grad = g.clone()
    before = g.flatten(1).norm(dim=1) / w.detach().flatten(1).norm(dim=1)
    adaptive_gradient_scale([w], delta=0.04)
    after = w.grad.flatten(1).norm(dim=1) / w.detach().flatten(1).norm(dim=1)
    assert (after >= 0.04 * (1 - 1e-5)).all()
    low = before < 0.04
    assert low.any() and (~low).any()
    torch.testing.assert_close(after[low], torch.full_like(after[low], 0.04))
    assert torch.equal(w.grad[~low], g[~low])  # channels already above delta are untouched
    # direction is kept
    cos = nn.functional.cosine_similarity(w.grad.flatten(1), g.flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones(8))


def test_ags_leaves_zero_gradient_channels_alone():
    w = torch.ones(2, 4, requires_grad=True)
    w.grad = torch.tensor([[0.0] * 4, [1e-4] * 4])
    adaptive_gradient_scale([w], delta=0.1)
    assert torch.count_nonzero(w.grad[0]) == 0
    assert float(w.grad[1].norm() / w.detach()[1].norm()) == pytest.approx(0.1, rel=1e-5)


def test_sad_tracker_and_decay_three_steps():
    # initial signs + + - - ; step 1 flips w0; step 2 flips w1 and w3; step 3 flips w0 again
    seq = [torch.tensor([0.5, 0.2, -0.3, -0.4]), torch.tensor([-0.1, 0.2, -0.3, -0.4]),
           torch.tensor([-0.1, -0.2, -0.3, 0.4]), torch.tensor([0.1, -0.2, -0.3, 0.4])]
    w = nn.Parameter(seq[0].clone())
    tr = SignTracker([w], momentum=0.9, threshold=0.095)
    expected = [[0.1, 0.0, 0.0, 0.0], [0.09, 0.1, 0.0, 0.1], [0.181, 0.09, 0.0, 0.09]]
    silent = [[False, True, True, True], [True, False, True, False], [False, True, True, True]]
    for step in range(3):
        with torch.no_grad():
            w.copy_(seq[step + 1])
        w.grad = torch.zeros(4)
        frac = silence_awareness_decay([w], tr, lambda_s=0.01)
        torch.testing.assert_close(tr.tracker[0], torch.tensor(expected[step]))
        assert tr.silent()[0].tolist() == silent[step]
        assert frac == pytest.approx(sum(silent[step]) / 4)
        torch.testing.assert_close(w.grad, 0.01 * torch.tensor(silent[step], dtype=torch.float32) * w.detach())
    assert tr.never_flipped_fraction() == 0.25  # only w2 never flipped


def _binary_net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
        QuantConv2d(4, 4, 3, padding=1, weight_quantizer=BinaryWeightQuantizer(4), act_quantizer=SignActivation()),
        nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        QuantLinear(4, 3, weight_quantizer=BinaryWeightQuantizer(3), act_quantizer=SignActivation()))


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) * 30).long() % 3
    return make_bundle("toy", x[:64], y[:64], x[64:], y[64:], DataParams(val_fraction=0.0), 0)


@pytest.mark.parametrize("cb", [SignFlips(), OvSW(), OvSW(ags=False, sad=False)])
def test_callbacks_log_per_epoch_fractions(cb):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, eval_every=0)
    hist = fit(_binary_net(), _data(), cfg, seed=0, callbacks=[cb])
    for row in hist:
        for key in ("binary_flip_fraction", "binary_silent_fraction", "binary_never_flipped_fraction"):
            assert 0.0 <= row[key] <= 1.0
    assert hist[1]["binary_never_flipped_fraction"] <= hist[0]["binary_never_flipped_fraction"]


def test_ovsw_with_both_parts_off_equals_plain_training():
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.1, eval_every=0)
    outs = []
    for cbs in ([], [OvSW(ags=False, sad=False)]):
        torch.manual_seed(0)
        m = _binary_net()
        fit(m, _data(), cfg, seed=0, callbacks=cbs)
        outs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_ovsw_flips_more_than_plain_ste_on_toy_run():
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.1, eval_every=0)
    silent = []
    for cb in (SignFlips(), OvSW(delta=0.5, lambda_s=0.5)):
        torch.manual_seed(0)
        hist = fit(_binary_net(), _data(), cfg, seed=0, callbacks=[cb])
        silent.append(hist[-1]["binary_never_flipped_fraction"])
    assert silent[1] < silent[0]


def test_recipe_callbacks_parse_and_build():
    cfg = from_dict(TrainConfig, {"callbacks": [{"name": "ovsw", "delta": 0.02}, "sign_flips",
                                                {"name": "reste_anneal", "o_end": 2.5}]})
    cbs = build_callbacks(cfg)
    assert isinstance(cbs[0], OvSW) and cbs[0].delta == 0.02
    assert isinstance(cbs[1], SignFlips) and cbs[2].o_end == 2.5
    with pytest.raises(ValueError, match="delta"):
        from_dict(TrainConfig, {"callbacks": [{"name": "ovsw", "delta": -1}]})


def test_no_binary_weights_is_an_error():
    cfg = TrainConfig(epochs=1, batch_size=16, eval_every=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    with pytest.raises(ValueError, match="no binary weights"):
        fit(model, _data(), cfg, callbacks=[SignFlips()])
