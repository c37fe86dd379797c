"""How APGD, APGD-T and FAB-T spend their batch: fooled samples leave it, several targets
share it when few samples are left, and neither changes any sample's answer."""
from __future__ import annotations

import pytest
import torch

from sturdynet.attacks import create_attack
from sturdynet.attacks.apgd import _group_any


def test_target_chunks_widen_as_samples_fall(trained_cnn):
    atk = create_attack("apgd-t", trained_cnn, eps=0.1, batch_size=256)
    done = torch.zeros(55, dtype=torch.bool)
    assert list(atk.target_chunks(done, 9)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    full = torch.zeros(256, dtype=torch.bool)
    assert list(atk.target_chunks(full, 9)) == [[t] for t in range(9)]  # a full batch: the authors' order
    done = torch.zeros(100, dtype=torch.bool)
    chunks = atk.target_chunks(done, 9)
    assert next(chunks) == [0, 1]
    done[:90] = True  # read anew before each chunk: 10 samples left -> the remaining 7 targets at once
    assert next(chunks) == [2, 3, 4, 5, 6, 7, 8]
    assert next(chunks, None) is None


def test_group_any_known_answer():
    flag = torch.tensor([False, True, False, False, False])
    group = torch.tensor([0, 1, 0, 1, 2])
    assert _group_any(flag, group).tolist() == [False, True, False, True, False]


def test_apgd_a_sample_answer_does_not_depend_on_when_others_leave(trained_cnn, digits):
    """Row 0's start and trajectory are its own: the same whichever rows beside it are
    fooled (and leave the batch) at whatever iteration."""
    x, y = digits.test.x, digits.test.y
    with torch.no_grad():
        ok = (trained_cnn(x).argmax(1) == y).nonzero().flatten()
    outs = []
    for partner in (ok[1], ok[2], ok[3]):
        idx = torch.stack([ok[0], partner])
        outs.append(create_attack("apgd", trained_cnn, eps=0.3, steps=20, seed=0)(x[idx], y[idx])[0])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_apgd_run_once_retires_fooled_rows_and_their_groups(trained_cnn, digits):
    """Rows leave the batch when fooled, and with ``group`` so do their group-mates
    (success False); counted by the rows the model sees."""
    x, y = digits.test.x, digits.test.y
    with torch.no_grad():
        ok = trained_cnn(x).argmax(1) == y
    bad, good = (~ok).nonzero().flatten(), ok.nonzero().flatten()
    idx = torch.stack([bad[0], good[0], good[1]])  # row 0 is misclassified from the start
    seen = []
    hook = trained_cnn.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        for group in (None, torch.tensor([0, 0, 1])):
            atk = create_attack("apgd", trained_cnn, eps=1e-4, steps=6, seed=0)  # too small to fool rows 1, 2
            atk.generator = torch.Generator().manual_seed(0)
            seen.clear()
            adv, s = atk.run_once(x[idx], y[idx], None, group=group)
            assert s.tolist() == [True, False, False]
            assert (adv - x[idx]).abs().max() <= 1e-4 + 1e-6
            assert sum(seen) == (3 + 6 * 2 if group is None else 3 + 6 * 1)
    finally:
        hook.remove()


def test_fab_t_shared_batch_equals_one_target_at_a_time(trained_cnn, digits):
    """FAB-T starts at x0 (deterministic): running its targets together gives the same
    smallest norms as running them one after the other (batch_size 1)."""
    x, y = digits.test.x[:12], digits.test.y[:12]
    norms = []
    for bs in (256, 1):
        atk = create_attack("fab-t", trained_cnn, eps=float("inf"), steps=20, n_target_classes=4, batch_size=bs)
        atk(x, y)
        norms.append(atk.min_norms)
    assert torch.isfinite(norms[0]).any()
    assert torch.allclose(norms[0], norms[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["apgd-t", "fab-t"])
def test_multi_target_verdict_matches_sequential(trained_cnn, digits, name):
    """Within eps, the samples fooled with targets sharing a batch are those fooled one
    target at a time (FAB-T: exactly; APGD-T: random starts differ, so within 2 samples)."""
    x, y = digits.test.x[:60], digits.test.y[:60]
    kw = {"eps": 0.08, "steps": 30, "n_target_classes": 9}
    fooled = []
    for bs in (256, 1):
        adv = create_attack(name, trained_cnn, batch_size=bs, seed=0, **kw)(x, y)
        with torch.no_grad():
            fooled.append(trained_cnn(adv).argmax(1) != y)
    diff = int((fooled[0] != fooled[1]).sum())
    assert 10 < int(fooled[0].sum()) < 50
    assert diff == 0 if name == "fab-t" else diff <= 2


class ViewNet(torch.nn.Module):
    """A conv net that ``view``s its activations: it cannot take channels_last inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.shape[0], -1))


def test_channels_last_inputs_fall_back_and_agree(trained_cnn, digits, monkeypatch):
    """Conv models get channels_last inputs on the CPU (same answers as contiguous ones up to
    float rounding); a model that cannot take them is attacked in its own layout."""
    import sturdynet.attacks.base as base

    x3 = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # 3 channels: the layouts differ
    net = ViewNet().eval()
    with pytest.raises(RuntimeError):
        net(x3.contiguous(memory_format=torch.channels_last))
    atk = create_attack("apgd", net, eps=0.1, steps=5, seed=0)
    adv = atk(x3, net(x3).argmax(1))
    assert atk._layout is torch.contiguous_format and adv.is_contiguous()
    flat = FlatNet().eval()  # the same net with reshape: takes either layout
    x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = flat(x).argmax(1)
    fast = create_attack("apgd", flat, eps=0.03, steps=10, seed=0)
    adv_fast = fast(x, y)
    assert fast._layout is torch.channels_last and adv_fast.is_contiguous()
    monkeypatch.setattr(base, "memory_format_for", lambda model, device: torch.contiguous_format)
    adv_plain = create_attack("apgd", flat, eps=0.03, steps=10, seed=0)(x, y)
    with torch.no_grad():
        f1, f2 = flat(adv_fast).argmax(1) != y, flat(adv_plain).argmax(1) != y
    assert 5 < int(f1.sum()) < 40 and int((f1 != f2).sum()) <= 1
    assert (adv_fast - adv_plain).abs().max() <= 0.06 + 1e-6


class FlatNet(ViewNet):
    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.reshape(h.shape[0], -1))
