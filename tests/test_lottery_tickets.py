"""Lottery tickets: IMP with rewinding, COLT, early-bird detection."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from sturdynet.core.method import MethodContext, TrainingContext
from sturdynet.train.context import training_context
from sturdynet.core.params import ConfigError, component
from sturdynet.data.base import DataBundle, Split
from sturdynet.prune.lottery.colt import COLTParams, intersect, overlap_keep, partition_data
from sturdynet.prune.lottery.common import RewindRecorder, initial_state, magnitude_masks, reinitialize, rewind, weights_state
from sturdynet.prune.lottery.early_bird import EarlyBird, mask_distance
from sturdynet.prune.lottery.imp import IMPParams
from sturdynet.core.masks import apply_masks, attach_mask, get_masks, iter_masks, mask_sparsity
from sturdynet.core.registry import CALLBACKS, METHODS
from sturdynet.train.config import TrainConfig
from sturdynet.train.loop import fit


def _data(n: int = 240, seed: int = 0, classes: int = 4) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, 1, 4, 4, generator=g) * 0.5
    x[:, 0, 0, :] += (y.float().unsqueeze(1) / classes) * 0.5  # a learnable signal
    val = Split(x[:40], y[:40])
    return DataBundle("toy", Split(x, y), val, val, classes, [str(i) for i in range(classes)],
                      (0.5,), (0.25,))


def _model(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, classes))


def _ctx(epochs: int = 2, seed: int = 3) -> TrainingContext:
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05)
    return training_context(_data(), cfg, seed=seed, device=torch.device("cpu"))


# ---- rewinding ---------------------------------------------------------------------------
def test_rewind_recorder_and_rewind_bit_exact_on_unpruned_positions():
    data = _data()
    model = _model()
    rec = RewindRecorder(step=3)
    fit(model, data, TrainConfig(epochs=2, batch_size=32, lr=0.1), seed=1, callbacks=[rec])
    assert rec.state is not None
    saved = {k: v.clone() for k, v in rec.state.items()}
    trained = weights_state(model)
    assert not torch.equal(saved["1.weight"], trained["1.weight"])  # training moved on after step 3
    mask = torch.rand(model[1].weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    attach_mask(model[1], "weight", mask)
    rewind(model, saved)
    w = model[1].weight.detach()
    assert torch.equal(w[mask], saved["1.weight"][mask])  # bit-exact
    assert torch.all(w[~mask] == 0)
    for k in ("3.weight", "3.bias", "5.weight"):
        assert torch.equal(model.state_dict()[k], saved[k])
    assert "1.weight_mask" in model.state_dict()  # masks are kept, not rewound


def test_rewind_recorder_step0_is_initial_state():
    data, model = _data(), _model()
    before = weights_state(model)
    rec = RewindRecorder(0)
    fit(model, data, TrainConfig(epochs=1, batch_size=32), seed=0, callbacks=[rec])
    assert all(torch.equal(before[k], rec.state[k]) for k in before)


def test_rewind_rejects_foreign_state():
    model = _model()
    with pytest.raises(ValueError, match="lacks"):
        rewind(model, {"1.weight": model[1].weight.detach()})


def test_reinitialize_is_seeded_and_differs_from_trained():
    model = _model()
    a, b, c = reinitialize(model, 5), reinitialize(model, 5), reinitialize(model, 6)
    assert torch.equal(a[1].weight, b[1].weight)
    assert not torch.equal(a[1].weight, c[1].weight)
    ctx = MethodContext(seed=5)
    assert torch.equal(initial_state(model, ctx)["1.weight"], a[1].weight)
    ctx.init_state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}  # runner-provided
    assert torch.all(initial_state(model, ctx)["1.weight"] == 0)


# ---- magnitude masks ---------------------------------------------------------------------
def test_magnitude_masks_keep_earlier_pruning_and_hit_count():
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, -5.0, 0.3, 4.0], [2.0, -0.2, 3.0, 1.0]]))
    attach_mask(lin, "weight", torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool))  # -5 already pruned
    keep = magnitude_masks([("l", lin)], 0.5)[0]
    # the pruned -5 goes first, then the three smallest live |w|: 0.1, 0.2, 0.3
    assert keep.tolist() == [[False, False, False, True], [True, False, True, True]]
    assert int((~keep).sum()) == 4


def test_magnitude_masks_layerwise():
    a, b = nn.Linear(4, 1, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        b.weight.copy_(torch.tensor([[10.0, 20.0]]))
    ka, kb = magnitude_masks([("a", a), ("b", b)], 0.5, "layerwise")
    assert ka.tolist() == [[False, False, True, True]] and kb.tolist() == [[False, True]]
    ga, gb = magnitude_masks([("a", a), ("b", b)], 0.5, "global")
    assert ga.tolist() == [[False, False, False, True]] and gb.tolist() == [[True, True]]


# ---- IMP ---------------------------------------------------------------------------------
def test_imp_params_validation():
    with pytest.raises(ConfigError):
        IMPParams()
    with pytest.raises(ConfigError):
        IMPParams(rate=0.2, sparsity=0.5)
    p = component(METHODS, {"method": "prune.imp", "sparsity": 0.875, "rounds": 3}, "v", key="method").params
    assert p.per_round == pytest.approx(0.5)


def test_imp_reaches_sparsity_and_rewinds_each_round(monkeypatch):
    import sturdynet.prune.lottery.imp as imp_mod

    seen = []
    real = imp_mod.rewind

    def spy(model, state):
        real(model, state)
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
    monkeypatch.setattr(imp_mod, "rewind", spy)
    ctx = _ctx()
    model = _model()
    out = METHODS.get("prune.imp")().apply(model, IMPParams(rounds=3, sparsity=0.875, rewind_step=2), ctx)
    assert mask_sparsity(out) == pytest.approx(0.875, abs=1.0 / 1700)
    assert len(seen) == 4  # the initial reset + one rewind per round
    # every round's rewound weights equal theta_k on the surviving positions
    k_state = seen[1]
    m1 = k_state["1.weight_mask"]
    assert not torch.equal(k_state["1.weight"][m1], seen[0]["1.weight"][m1])  # theta_2, not theta_0
    for s in seen[2:]:
        m = s["1.weight_mask"]
        assert torch.equal(s["1.weight"][m], k_state["1.weight"][m])
    log = ctx.log["imp"]
    assert [r["round"] for r in log["rounds"]] == [0, 1, 2, 3] and log["rewind_step"] == 2
    sp = [r["sparsity"] for r in log["rounds"]]
    assert sp == pytest.approx([0.0, 0.5, 0.75, 0.875])
    # masks are nested: later rounds only remove weights
    assert model is not out and not list(iter_masks(model))


def test_imp_is_deterministic():
    a = METHODS.get("prune.imp")().apply(_model(), IMPParams(rounds=1, rate=0.5), _ctx(epochs=1))
    b = METHODS.get("prune.imp")().apply(_model(), IMPParams(rounds=1, rate=0.5), _ctx(epochs=1))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_imp_needs_context():
    with pytest.raises(TypeError, match="prune.imp trains the network: its ctx argument must be a TrainingContext"):
        METHODS.get("prune.imp")().apply(_model(), IMPParams(rate=0.5), None)


def test_imp_prepare_loads_checkpoint():
    ctx = _ctx(epochs=1)
    out = METHODS.get("prune.imp")().apply(_model(), IMPParams(rounds=1, rate=0.5), ctx)
    shell = METHODS.get("prune.imp")().prepare(_model(), IMPParams(rounds=1, rate=0.5))
    shell.load_state_dict(out.state_dict())
    x = torch.rand(5, 1, 4, 4)
    assert torch.equal(shell(x), out.eval()(x))


# ---- early bird --------------------------------------------------------------------------
def test_mask_distance_known_answer():
    a = [torch.tensor([1, 1, 0, 0], dtype=torch.bool), torch.tensor([[1, 0], [0, 1]], dtype=torch.bool)]
    b = [torch.tensor([1, 0, 0, 1], dtype=torch.bool), torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)]
    assert mask_distance(a, b) == pytest.approx(3 / 8)
    assert mask_distance(a, a) == 0.0
    with pytest.raises(ValueError):
        mask_distance(a, b[:1])


def test_early_bird_fifo_rule():
    eb = EarlyBird(sparsity=0.5, threshold=0.3, window=2)
    m = lambda *v: [torch.tensor(v, dtype=torch.bool)]  # noqa: E731
    assert not eb.update(m(1, 1, 0, 0))
    assert not eb.update(m(0, 1, 1, 0))  # distance 0.5
    assert not eb.update(m(0, 1, 1, 0))  # 0.0, but the queue still holds 0.5
    assert eb.update(m(0, 1, 1, 0))      # queue [0, 0] -> drawn
    assert eb.distances == [0.5, 0.0, 0.0]


def test_early_bird_stops_training():
    data = _data()
    model = _model()
    eb = CALLBACKS.create("early_bird", sparsity=0.5, threshold=1.0, window=1)
    hist = fit(model, data, TrainConfig(epochs=6, batch_size=32), seed=0, callbacks=[eb])
    assert eb.drawn_epoch == 2 and len(hist) == 2 and hist[-1]["eb_drawn"] == 1.0


def test_early_bird_bn_criterion():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, -2.0, 0.5, 3.0]))
    eb = EarlyBird(sparsity=0.5, criterion="bn")
    assert eb.current_mask(model)[0].tolist() == [False, True, False, True]


# ---- COLT --------------------------------------------------------------------------------
def test_colt_intersection_hand_made():
    a = [torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)]
    b = [torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)]
    assert intersect([a, b])[0].tolist() == [[True, False, False], [True, False, True]]


def test_overlap_keep_exact_count():
    s1 = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    s2 = torch.tensor([1.0, 4.0, 5.0, 3.0, 2.0])
    # ranks s1: [0,1,2,3,4], s2: [4,1,0,2,3]; worst: [4,1,2,3,4]
    assert overlap_keep([s1, s2], 2).tolist() == [False, True, True, False, False]
    assert int(overlap_keep([s1, s2], 3).sum()) == 3


def test_partition_by_classes_and_random():
    data = _data()
    a, b = partition_data(data, 2, "classes", 0)
    assert set(a.train.y.tolist()) == {0, 1} and set(b.train.y.tolist()) == {2, 3}
    r1, r2 = partition_data(data, 2, "random", 0)
    assert len(r1.train) + len(r2.train) == len(data.train)
    assert set(r1.train.y.tolist()) == {0, 1, 2, 3}


def test_colt_reaches_exact_sparsity_and_mask_is_overlap(monkeypatch):
    import sturdynet.prune.lottery.colt as colt_mod

    calls = []
    real = colt_mod.intersect

    def spy(masks):
        out = real(masks)
        calls.append((masks, out))
        return out
    monkeypatch.setattr(colt_mod, "intersect", spy)
    ctx = _ctx(epochs=1)
    out = METHODS.get("prune.colt")().apply(_model(), COLTParams(sparsity=0.8, rate=0.3), ctx)
    total = sum(m.numel() for m in get_masks(out).values())
    assert mask_sparsity(out) == pytest.approx(0.8, abs=1.0 / total)
    cycles = ctx.log["colt"]["cycles"]
    assert len(cycles) >= 2 and cycles[-1]["sparsity"] == pytest.approx(0.8, abs=1.0 / total)
    # a normal cycle removes more than `rate` because it keeps only the overlap
    first_masks, first_out = calls[0]
    assert 1 - sum(int(m.sum()) for m in first_out) / total >= 0.3
    for per_model in first_masks:
        assert all((o <= m).all() for o, m in zip(first_out, per_model))
    # the ticket is theta_0 under the final mask, then trained; weights stay zero where masked
    apply_masks(out)
    for _, m, p, mask in iter_masks(out):
        assert torch.all(getattr(m, p)[~mask] == 0)


def test_imp_early_bird_stops_dense_round():
    ctx = _ctx(epochs=5)
    params = IMPParams(rounds=1, rate=0.5, early_bird=True, eb_threshold=1.0, eb_window=1)
    out = METHODS.get("prune.imp")().apply(_model(), params, ctx)
    r0, r1 = ctx.log["imp"]["rounds"]
    assert r0["early_bird_epoch"] == 2 and r0["epochs"] == 2  # dense run cut short
    assert r1["epochs"] == 5  # the ticket trains the full budget
    assert mask_sparsity(out) == pytest.approx(0.5, abs=1e-3)


def test_imp_rewind_step_beyond_training_is_an_error():
    with pytest.raises(ValueError, match="beyond"):
        METHODS.get("prune.imp")().apply(_model(), IMPParams(rate=0.5, rounds=1, rewind_step=10_000), _ctx(epochs=1))
