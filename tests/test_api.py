"""The Python API (compress, check) on any nn.Module and any data form, and declared input
normalization: attacking a wrapped network equals attacking one with normalization built in."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import byo_nets
from sturdynet.models.spec import InputNormalized


def test_import_stays_light():
    code = ("import sys, sturdynet; assert 'torch' not in sys.modules; from sturdynet import check; "
            "from sturdynet.run.store import versions; versions(); "
            "assert not {'torchvision', 'timm', 'torch_pruning'} & set(sys.modules); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.fixture(scope="module")
def net(digits):
    from sturdynet.train import TrainConfig, fit

    torch.manual_seed(0)
    m = byo_nets.concat_se(width=8)
    fit(m, digits, TrainConfig(epochs=6, lr=0.05), seed=0)
    return m.eval()


def test_check_accepts_every_data_form(net, digits):
    from sturdynet import check

    x, y = digits.test.x[:100], digits.test.y[:100]
    ds = torch.utils.data.TensorDataset(x, y)
    forms = [(x, y), torch.utils.data.DataLoader(ds, batch_size=32), ds]
    res = [check(net, f, ["clean", {"check": "pgd", "eps": 0.05, "steps": 3, "id": "pgd-small"}]) for f in forms]
    for r in res:
        assert set(r) == {"clean", "pgd-small"}
        assert {"accuracy", "samples", "per_sample"} <= set(r["clean"])
        assert r["clean"]["samples"] == 100 and len(r["clean"]["per_sample"]) == 100
    assert res[0]["clean"]["accuracy"] == res[1]["clean"]["accuracy"] == res[2]["clean"]["accuracy"] > 0.8
    assert res[0]["pgd-small"]["accuracy"] == res[1]["pgd-small"]["accuracy"]


def test_compress_then_check(net, digits):
    from sturdynet import check, compress

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits.train.x, digits.train.y), batch_size=64)
    q = compress(net, "quant.uniform", bits=4, calibration=loader)
    log = {}
    p = compress(net, "prune.structured", amount=0.5, calibration=loader, log=log)
    assert sum(t.numel() for t in p.parameters()) < sum(t.numel() for t in net.parameters())
    assert log["prune.structured"]["macs_after"] < log["prune.structured"]["macs_before"]
    r = check(q, (digits.test.x, digits.test.y), ["clean", {"check": "bfa", "samples": 60, "trials": 1,
                                                            "max_flips": 3, "attack_batch": 32}])
    assert r["clean"]["accuracy"] > 0.8 and "accuracy" in r["bfa"]
    with pytest.raises(ValueError, match="did you mean quant.uniform"):
        compress(net, "quant.unifrom", bits=4)


class _BuiltIn(nn.Module):
    """The same network with its normalization written into forward."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def test_declared_normalization_attacks_in_pixel_space(net, digits):
    from sturdynet import check

    mean, std = 0.3, 0.4
    wrapped = InputNormalized(net, [mean], [std]).eval()
    built_in = _BuiltIn(net, mean, std).eval()
    data = (digits.test.x[:80], digits.test.y[:80])
    checks = [{"check": "pgd", "eps": 0.1, "steps": 5}, {"check": "fgsm", "eps": 0.1}]
    a, b = check(wrapped, data, checks), check(built_in, data, checks)
    for c in ("pgd", "fgsm"):
        assert a[c]["accuracy"] == b[c]["accuracy"] and a[c]["per_sample"] == b[c]["per_sample"]


def test_compress_with_a_method_that_trains(net, digits):
    from sturdynet import compress

    data = (digits.train.x[:256], digits.train.y[:256])
    with pytest.raises(ValueError, match="prune.imp trains the network: pass train="):
        compress(net, "prune.imp", rounds=1, rate=0.5)
    log = {}
    p = compress(net, "prune.imp", train=data, train_config={"epochs": 1, "batch_size": 64}, rounds=1, rate=0.5,
                 log=log)
    assert [r["sparsity"] for r in log["imp"]["rounds"]] == [0.0, 0.5]
    assert p(digits.test.x[:4]).shape == (4, 10)


def test_bit_flip_attack_takes_a_tuple_or_loader(net, digits):
    """BitFlipAttack(...).run(model, x, (x, y), K) works with an (x, y) pair or a DataLoader."""
    from sturdynet.faults.bfa import BitFlipAttack

    x, y = digits.test.x[:64], digits.test.y[:64]
    a = BitFlipAttack(max_flips=2).run(net, x, (x, y), 10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    b = BitFlipAttack(max_flips=2).run(net, (x, y), loader, 10)
    assert a.flips == b.flips and a.flips >= 1
