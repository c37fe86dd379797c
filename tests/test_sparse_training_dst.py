"""Dynamic sparse training: SET, RigL, AGENT callbacks and the prune.set / prune.rigl methods."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sturdynet.core.method import TrainingContext
from sturdynet.train.context import training_context
from sturdynet.core.params import ConfigError, component
from sturdynet.data.base import DataBundle, Split
from sturdynet.core.masks import attach_mask, get_masks, iter_masks, mask_sparsity
from sturdynet.prune.sparse import AGENT, SET, RigL, control_variate_tau, drop_and_grow, drop_fraction, random_sparse_masks, reset_optimizer_state
from sturdynet.core.registry import CALLBACKS, METHODS
from sturdynet.core.callbacks import Callback
from sturdynet.train.config import TrainConfig
from sturdynet.train.loop import fit


def _data(n: int = 256, classes: int = 4) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.rand(n, 1, 4, 4, generator=g) * 0.5
    x[:, 0, 0, :] += (y.float().unsqueeze(1) / classes) * 0.5
    val = Split(x[:32], y[:32])
    return DataBundle("toy", Split(x, y), val, val, classes, [str(i) for i in range(classes)], (0.5,), (0.25,))


def _masked_model(density: float = 0.3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    g = torch.Generator().manual_seed(seed)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    for m, k in zip(layers, random_sparse_masks([m.weight.shape for m in layers], 1 - density, "uniform", g)):
        attach_mask(m, "weight", k)
    return model


class MaskWatch(Callback):
    """Records masks and weights right after every DST update."""

    def __init__(self, dst) -> None:
        self.dst, self.seen, self.prev = dst, [], None

    def on_train_begin(self, state):
        self.prev = {k: v.clone() for k, v in get_masks(state.model).items()}

    def on_step_end(self, state):
        cur = {k: v.clone() for k, v in get_masks(state.model).items()}
        if any(not torch.equal(cur[k], self.prev[k]) for k in cur):
            weights = {f"{n}.{p}": getattr(m, p).detach().clone() for n, m, p, _ in iter_masks(state.model)}
            mom = {f"{n}.{p}": state.optimizer.state[getattr(m, p)]["momentum_buffer"].clone()
                   for n, m, p, _ in iter_masks(state.model)}
            self.seen.append((self.prev, cur, weights, mom))
        self.prev = cur


# ---- known answers -----------------------------------------------------------------------
def test_cosine_drop_fraction_values():
    assert drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert drop_fraction(25, 0.3, 100) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert drop_fraction(100, 0.3, 100) == 0.0 and drop_fraction(150, 0.3, 100) == 0.0
    assert drop_fraction(70, 0.3, 100, "constant") == 0.3
    with pytest.raises(ValueError):
        drop_fraction(1, 0.3, 100, "linear")


def test_drop_and_grow_hand_made():
    w = torch.tensor([0.5, -0.1, 0.0, 0.0, 2.0, 0.0])
    mask = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    grad = torch.tensor([0.0, 0.0, 0.2, 0.9, 0.0, 0.5])
    new, n_new = drop_and_grow(w, mask, 2, grad.abs())
    # drop -0.1 and 0.5 (smallest active); grow at 3 (0.9) and 5 (0.5)
    assert new.tolist() == [False, False, False, True, True, True] and n_new == 2
    # a just-dropped position may be regrown: its gradient is the largest
    new, n_new = drop_and_grow(w, mask, 1, torch.tensor([0.0, 5.0, 0.2, 0.1, 0.0, 0.0]))
    assert new.tolist() == mask.tolist() and n_new == 0


def test_random_sparse_masks_erk_counts():
    g = torch.Generator().manual_seed(0)
    shapes = [torch.Size([16, 3, 3, 3]), torch.Size([32, 16, 3, 3]), torch.Size([10, 32])]
    masks = random_sparse_masks(shapes, 0.9, "erk", g)
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == round(0.1 * total)
    dens = [m.float().mean().item() for m in masks]
    assert dens[0] > dens[1]  # ERK gives the small first layer a higher density


def test_reset_optimizer_state():
    p = nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(4)
    opt.step()
    reset_optimizer_state(opt, p, torch.tensor([True, False, True, False]))
    assert opt.state[p]["momentum_buffer"].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_control_variate_tau_known_answer():
    prev = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert control_variate_tau(2 * prev + 1, prev) == pytest.approx(2.0)
    assert control_variate_tau(-prev, prev) == pytest.approx(-1.0)
    assert control_variate_tau(prev, torch.ones(4)) is None


# ---- invariants in training ----------------------------------------------------------------
@pytest.mark.parametrize("dst", [lambda: RigL(alpha=0.3, delta_t=4, t_end=0.75),
                                 lambda: SET(zeta=0.3, interval=4, t_end=0.75)], ids=["rigl", "set"])
def test_dst_keeps_layer_density_and_regrows_what_it_drops(dst):
    model = _masked_model()
    before = {k: int(v.sum()) for k, v in get_masks(model).items()}
    cb = dst()
    watch = MaskWatch(cb)
    fit(model, _data(), TrainConfig(epochs=4, batch_size=32, lr=0.05), seed=0, callbacks=[cb, watch])
    assert len(cb.updates) == len(watch.seen) >= 3
    # updates at multiples of 4, before 75% of the 32 steps
    assert [u["step"] for u in cb.updates] == [4, 8, 12, 16, 20]
    for (old, new, weights, mom), upd in zip(watch.seen, cb.updates):
        grown_total = dropped_total = 0
        for k in new:
            assert int(new[k].sum()) == before[k]  # every layer's density is unchanged
            grown = new[k] & ~old[k]
            dropped = old[k] & ~new[k]
            assert int(grown.sum()) == int(dropped.sum())  # regrows exactly what it dropped
            assert torch.all(weights[k][grown] == 0)  # new weights start at zero
            assert torch.all(mom[k][grown] == 0)  # and their momentum is reset
            grown_total += int(grown.sum())
            dropped_total += int(dropped.sum())
        assert upd["grown_new"] == grown_total
        frac = drop_fraction(upd["step"], 0.3, 24, cb.decay)
        assert upd["replaced"] == sum(round(frac * before[k]) for k in new)
    for _, m, p, mask in iter_masks(model):
        assert torch.all(getattr(m, p)[~mask] == 0)


def test_rigl_grows_where_dense_gradient_is_largest():
    model = _masked_model(density=0.2)
    data = _data()

    class GradProbe(Callback):
        def on_after_backward(self, state):
            if state.step + 1 == 4:
                self.g = {id(m): m.weight.grad.clone() for m in state.model if isinstance(m, nn.Linear)}
    probe = GradProbe()
    rigl = RigL(alpha=0.3, delta_t=4, t_end=0.75)
    watch = MaskWatch(rigl)
    fit(model, data, TrainConfig(epochs=1, batch_size=32, lr=0.05), seed=0, callbacks=[probe, rigl, watch])
    old, new, _, _ = watch.seen[0]
    n_grown = 0
    for (name, m) in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        grown = new[f"{name}.weight"] & ~old[f"{name}.weight"]
        cand = ~new[f"{name}.weight"]  # inactive after the update
        g = probe.g[id(m)].abs()
        n_grown += int(grown.sum())
        if int(grown.sum()):
            assert g[grown].min() >= g[cand].max() - 1e-12
    assert n_grown > 0


def test_dst_is_deterministic():
    def run():
        model = _masked_model()
        fit(model, _data(), TrainConfig(epochs=2, batch_size=32), seed=1, callbacks=[SET(interval=3)])
        return model.state_dict()
    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dst_requires_masks():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    with pytest.raises(ValueError, match="needs masked layers"):
        fit(model, _data(), TrainConfig(epochs=1), callbacks=[RigL()])


def test_agent_corrects_gradient_by_formula():
    model = _masked_model()
    data = _data()
    agent = AGENT(gamma=0.5, tau=0.2)

    class Check(Callback):
        def on_batch_begin(self, state):
            self.raw = None

        def compute_loss(self, state):
            return None

        def on_after_backward(self, state):
            if state.step == 1:  # called before AGENT: raw gradient
                self.raw = [p.grad.clone() for p in state.model.parameters()]

    class After(Callback):
        def on_after_backward(self, state):
            if state.step == 1:
                snap = agent.snapshot
                for p in snap.parameters():
                    p.grad = None
                torch.nn.functional.cross_entropy(snap(state.x), state.y).backward()
                want = [r + 0.5 * agent.tau * (mu - ps.grad)
                        for r, mu, ps in zip(check.raw, agent.mu, snap.parameters())]
                self.ok = all(torch.allclose(p.grad, w, atol=1e-6) for p, w in zip(state.model.parameters(), want))
    check, after = Check(), After()
    fit(model, data, TrainConfig(epochs=2, batch_size=64), seed=0, callbacks=[check, agent, after])
    assert after.ok
    assert len(agent.taus) == 2 and agent.taus[0] == 0.2  # first epoch: no previous snapshot


# ---- methods and registry ----------------------------------------------------------------
def _ctx(epochs: int = 2) -> TrainingContext:
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05)
    return training_context(_data(), cfg, seed=4, device=torch.device("cpu"))


def _dense() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.mark.parametrize("name,extra", [("prune.rigl", {"delta_t": 3}), ("prune.set", {"interval": 3}),
                                        ("prune.rigl", {"delta_t": 3, "agent": True})])
def test_methods_train_at_requested_sparsity(name, extra):
    params = component(METHODS, {"method": name, "sparsity": 0.8, "distribution": "erk", **extra}, "v",
                       key="method").params
    ctx = _ctx()
    model = _dense()
    out = METHODS.get(name)().apply(model, params, ctx)
    total = sum(m.numel() for m in get_masks(out).values())
    assert mask_sparsity(out) == pytest.approx(0.8, abs=1.0 / total)
    assert ctx.log[name]["updates"]
    assert not list(iter_masks(model))
    shell = METHODS.get(name)().prepare(_dense(), params)
    shell.load_state_dict(out.state_dict())
    if extra.get("agent"):
        assert len(ctx.log[name]["agent_tau"]) == 2


def test_callbacks_from_recipe_config():
    cfg = TrainConfig(epochs=1)
    from sturdynet.core.params import from_dict
    cfg = from_dict(TrainConfig, {"epochs": 2, "callbacks": [{"name": "rigl", "delta_t": 5}, "agent",
                                                             {"name": "set", "zeta": 0.2}]}, "train")
    assert [c.name for c in cfg.callbacks] == ["rigl", "agent", "set"]
    with pytest.raises(ConfigError, match="alpha"):
        from_dict(TrainConfig, {"callbacks": [{"name": "rigl", "alpha": 1.5}]}, "train")
    assert {"set", "rigl", "agent", "early_bird"} <= set(CALLBACKS.names())


def test_recipe_end_to_end_with_reload(tmp_path):
    """The methods and callbacks run from a recipe; the saved variants reload exactly."""
    from sturdynet.run.recipe import parse_recipe
    from sturdynet.run.runner import run_recipe
    from sturdynet.run.checkpoint import load_checkpoint

    recipe = {
        "name": "dst", "seed": 0,
        "data": {"name": "digits", "subset": {"train": 300, "test": 60}},
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
        "variants": [
            {"name": "imp", "method": "prune.imp", "sparsity": 0.75, "rounds": 2, "epochs": 1},
            {"name": "colt", "method": "prune.colt", "sparsity": 0.7, "rate": 0.4, "epochs": 1},
            {"name": "rigl", "method": "prune.rigl", "sparsity": 0.8, "delta_t": 2, "agent": True},
            {"name": "set", "method": "prune.set", "sparsity": 0.8, "interval": 2},
            {"name": "gm-rigl", "method": "prune.global_magnitude", "sparsity": 0.8, "finetune_epochs": 2,
             "finetune": {"callbacks": [{"name": "rigl", "delta_t": 2}, "agent"]}},
        ],
        "evaluate": [{"check": "clean"}],
    }
    res = run_recipe(parse_recipe(recipe), tmp_path)
    by = {v["name"]: v for v in res["variants"]}
    for name, sp in [("imp", 0.75), ("colt", 0.7), ("rigl", 0.8), ("set", 0.8), ("gm-rigl", 0.8)]:
        assert by[name]["status"] == "ok", by[name]
        assert by[name]["sparsity"] == pytest.approx(sp, abs=2e-3)
        model, _ = load_checkpoint(tmp_path / "variants" / f"{name}.safetensors")
        assert mask_sparsity(model) == pytest.approx(sp, abs=2e-3)
    assert len(by["imp"]["method_log"]["imp"]["rounds"]) == 3
    assert by["rigl"]["method_log"]["prune.rigl"]["agent_tau"]
