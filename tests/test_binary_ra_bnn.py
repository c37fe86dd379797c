"""RA-BNN Early-Growth: Gumbel-Sigmoid gates, channel copying, growth on a tiny model."""
import pytest
import torch

from sturdynet.core.method import TrainingContext
from sturdynet.train.context import training_context
from sturdynet.data.base import DataParams, make_bundle
from sturdynet.models.common import build_model
from sturdynet.quant.binary.ra_bnn import GumbelSigmoidGate, RABNNGrow, RABNNParams, RAGrowthPenalty, channel_map, copy_channels
from sturdynet.train.config import TrainConfig


def test_gate_hard_forward_straight_through_backward():
    g = GumbelSigmoidGate(4, fixed=1, init_logit=0.0)
    with torch.no_grad():
        g.logits.copy_(torch.tensor([-5.0, 2.0, -2.0, 0.5]))
    g.eval()
    m = g()
    assert m.tolist() == [1.0, 1.0, 0.0, 1.0]  # channel 0 is fixed on; the others: logit > 0
    m.sum().backward()
    s = torch.sigmoid(torch.tensor([2.0, -2.0, 0.5]))
    torch.testing.assert_close(g.logits.grad, torch.cat([torch.zeros(1), s * (1 - s)]))
    assert g.kept().tolist() == [0, 1, 3]


def test_gate_samples_are_binary_and_follow_the_logit():
    torch.manual_seed(0)
    g = GumbelSigmoidGate(2000, init_logit=0.0)
    with torch.no_grad():
        g.logits[:1000] = 1.0
        g.logits[1000:] = -1.0
    g.train()
    m = g().detach()
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    # P(open) = sigmoid(logit / T) for logistic noise: 0.731 and 0.269
    assert m[:1000].mean().item() == pytest.approx(0.731, abs=0.05)
    assert m[1000:].mean().item() == pytest.approx(0.269, abs=0.05)


def test_channel_map_finds_group_dims():
    m = build_model("bireal_resnet20", 3, 10, (8, 8), width=4)
    cmap = channel_map(m)
    assert cmap["stem.weight"] == [(0, 0, 1)]
    assert cmap["units.6.conv.weight"] == [(0, 1, 1), (1, 0, 1)]  # first unit of stage 2: 4 -> 8
    assert cmap["units.6.shortcut.1.weight"] == [(0, 1, 1), (1, 0, 1)]
    assert cmap["fc.weight"] == [(1, 2, 1)]
    v = build_model("binary_vgg_small", 3, 10, (32, 32), width=4)
    assert channel_map(v)["fc.weight"] == [(1, 5, 16)]  # flattened 4x4 map, channel-major


@pytest.mark.parametrize("name", ["bireal_resnet20", "binary_vgg_small"])
def test_copy_channels_identity_reproduces_the_model(name):
    torch.manual_seed(0)
    a = build_model(name, 1, 10, (8, 8), width=4).eval()
    b = a.rebuild(a.widths).eval()
    idx = [torch.arange(w) for w in a.widths]
    copy_channels(a, b, idx, idx)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(a(x), b(x))


def test_copy_channels_selects_the_kept_channels():
    torch.manual_seed(0)
    a = build_model("binary_vgg_small", 1, 10, (8, 8), width=4)
    keep = [torch.tensor([0, 2]), torch.tensor([1, 3]), torch.arange(8), torch.arange(8), torch.arange(16),
            torch.tensor([5, 7, 9])]
    b = a.rebuild([len(k) for k in keep])
    copy_channels(a, b, keep, [torch.arange(len(k)) for k in keep])
    torch.testing.assert_close(b.convs[0].weight, a.convs[0].weight[[0, 2]])
    torch.testing.assert_close(b.convs[1].weight, a.convs[1].weight[[1, 3]][:, [0, 2]])
    torch.testing.assert_close(b.bns[5].running_var, a.bns[5].running_var[[5, 7, 9]])
    torch.testing.assert_close(b.fc.weight, a.fc.weight[:, [5, 7, 9]])


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(80, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > 0.5).long() + 2 * (x[:, 0, 4:].mean(dim=(1, 2)) > 0.5).long()
    return make_bundle("toy", x[:64], y[:64], x[64:], y[64:], DataParams(val_fraction=0.0), 0)


def _ctx(data):
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, eval_every=0)
    return training_context(data, cfg, seed=0)


@pytest.mark.parametrize("init_logit,l1,expected", [(4.0, 0.0, (8, 16, 32)), (-4.0, 1.0, (4, 8, 16))])
def test_growth_widths_follow_the_masks(init_logit, l1, expected):
    torch.manual_seed(0)
    data = _data()
    base = build_model("bireal_resnet20", 1, 4, (8, 8), width=4)
    ctx = _ctx(data)
    params = RABNNParams(grow_epochs=1, retrain_epochs=1, l1=l1, init_logit=init_logit)
    grown = RABNNGrow().apply(base, params, ctx)
    assert grown.widths == expected
    log = ctx.log["ra_bnn"]
    assert log["base_widths"] == [4, 8, 16] and log["candidate_widths"] == [8, 16, 32]
    assert log["grown_widths"] == list(expected)
    assert grown(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    assert grown.gates is None and base.widths == (4, 8, 16)


def test_growth_adds_channels_on_a_tiny_model():
    torch.manual_seed(0)
    data = _data()
    base = build_model("binary_vgg_small", 1, 4, (8, 8), width=2)
    ctx = _ctx(data)
    grown = RABNNGrow().apply(base, RABNNParams(grow_epochs=2, retrain_epochs=0, l1=1e-3), ctx)
    assert sum(grown.widths) > sum(base.widths)
    assert all(g >= b for g, b in zip(grown.widths, base.widths))  # base channels are always kept
    assert all(g <= 2 * b for g, b in zip(grown.widths, base.widths))


def test_penalty_adds_l1_of_active_candidates():
    torch.manual_seed(0)
    m = build_model("bireal_resnet20", 1, 4, (8, 8), width=2)
    gates = [GumbelSigmoidGate(w, fixed=1, init_logit=9.0) for w in m.widths]
    m.set_gates(gates)
    m.eval()

    class S:
        x, y, model = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), m
        config = TrainConfig()
        logits = None

    loss = RAGrowthPenalty(l1=0.5).compute_loss(S)
    ce = torch.nn.functional.cross_entropy(S.logits, S.y)
    assert float((loss - ce).detach()) == pytest.approx(0.5 * (1 + 3 + 7))  # all candidates on, base channels not counted


def test_grown_state_dict_loads_into_the_prepared_structure():
    torch.manual_seed(0)
    base = build_model("binary_vgg_small", 1, 4, (8, 8), width=2).eval()
    grown = base.rebuild((3, 2, 5, 4, 8, 9)).eval()
    skeleton = RABNNGrow().prepare(base, RABNNParams())  # widths unknown until the state_dict arrives
    assert skeleton.widths == base.widths
    skeleton.load_state_dict(grown.state_dict())
    assert skeleton.widths == (3, 2, 5, 4, 8, 9)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(skeleton.eval()(x), grown(x))


def test_prepare_with_widths_and_model_must_be_growable():
    m = build_model("bireal_resnet20", 1, 4, (8, 8), width=2)
    assert RABNNGrow().prepare(m, RABNNParams(widths=(3, 5, 7))).widths == (3, 5, 7)
    with pytest.raises(ValueError, match="growable"):
        RABNNGrow().apply(build_model("small_cnn", 1, 4, (8, 8)), RABNNParams(), _ctx(_data()))


def test_fixed_widths_build_exactly_those_widths():
    """``widths`` wider and narrower than the base: the asked widths, base weights in the first channels."""
    torch.manual_seed(0)
    base = build_model("bireal_resnet20", 1, 4, (8, 8), width=2)
    ctx = TrainingContext(data=None, train=TrainConfig(epochs=1), seed=0, fit=lambda m, c, **kw: [],
                          finetune_config=lambda *a: None)
    grown = RABNNGrow().apply(base, RABNNParams(widths=(3, 5, 7), retrain_epochs=0), ctx)
    assert grown.widths == (3, 5, 7)  # base (2, 4, 8)
    torch.testing.assert_close(grown.stem.weight[:2], base.stem.weight)
    torch.testing.assert_close(grown.fc.weight, base.fc.weight[:, :7])


def test_prepare_for_state_reads_the_grown_widths_from_shapes():
    base = build_model("binary_vgg_small", 1, 4, (8, 8), width=2)
    grown = base.rebuild((3, 2, 5, 4, 8, 9))
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in grown.state_dict().items()}
    shell = RABNNGrow().prepare_for_state(base, RABNNParams(), shapes)
    assert shell.widths == (3, 2, 5, 4, 8, 9) and base.widths == (2, 2, 4, 4, 8, 8)
    shell.load_state_dict(grown.state_dict())
    with pytest.raises(ValueError, match="stored tensors have widths"):
        RABNNGrow().prepare_for_state(base, RABNNParams(widths=(2, 2, 4, 4, 8, 8)), shapes)
