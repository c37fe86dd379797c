"""Packed export: bit-exact round trips and size within 2% of compression_facts (and of theory)."""
from __future__ import annotations

import copy

import pytest
import torch

from sturdynet.core.method import run_steps
from sturdynet.train import TrainConfig
from sturdynet.train.context import training_context
from sturdynet.core.params import Component, component
from sturdynet.export import export_model, load_packed, read_packed
from sturdynet.export.bits import packed_nbytes
from sturdynet.export.packed import stored_tensors
from sturdynet.models import model_for_data
from sturdynet.models.resnet20 import ResNet20Params
from sturdynet.core.registry import METHODS, MODELS
from sturdynet.core.storage import compression_facts
from sturdynet.models.arch import arch_of

MODEL = Component("resnet20", ResNet20Params(width=0.5))


@pytest.fixture(scope="module")
def base(digits):
    torch.manual_seed(0)
    return model_for_data(MODEL, digits).eval()


def _variant(base, digits, raw):
    steps = [component(METHODS, s, f"steps[{i}]", key="method") for i, s in enumerate(raw)]
    model = run_steps(copy.deepcopy(base), steps, training_context(digits, TrainConfig(epochs=1), seed=0)).eval()
    return model, arch_of(MODEL, digits, steps)


def _round_trip(tmp_path, base, digits, raw, **kw):
    model, arch = _variant(base, digits, raw)
    path = tmp_path / "m.sturdy"
    info = export_model(model, path, arch, **kw)
    loaded, blob = load_packed(path)
    x = digits.test.x[:32]
    with torch.no_grad():
        same = torch.equal(model(x), loaded(x))
    return model, loaded, info, blob, same


CASES = [[{"method": "quant.uniform", "bits": b, "act_bits": 8}] for b in range(2, 9)] + [
    [{"method": "quant.uniform", "bits": 4, "act_bits": 4, "mode": "lsq"}],
    [{"method": "quant.uniform", "bits": 3, "per_channel": False, "calibration": "percentile"}],
    [{"method": "quant.ternary"}],
    [{"method": "quant.fixed_point", "bits": 6, "act_bits": 8, "bn": True, "residual": True}],
    [{"method": "prune.global_magnitude", "sparsity": 0.8}, {"method": "quant.uniform", "bits": 4}],
    [{"method": "prune.global_magnitude", "sparsity": 0.7}, {"method": "quant.ternary"}],
    [{"method": "prune.global_magnitude", "sparsity": 0.9}],
    [{"method": "prune.global_magnitude", "sparsity": 0.05}, {"method": "quant.uniform", "bits": 8}],  # dense + mask
    [],
]


@pytest.mark.parametrize("raw", CASES, ids=lambda r: "+".join(f"{s['method']}{s.get('bits', '')}" for s in r) or "float")
def test_round_trip_bit_exact_and_size(tmp_path, base, digits, raw):
    model, loaded, info, blob, same = _round_trip(tmp_path, base, digits, raw)
    assert same, "loaded model's outputs differ from the exported model's"
    size = compression_facts(model)["size_bytes"]
    assert abs(info["payload_bytes"] - size) <= 0.02 * size
    assert compression_facts(loaded)["size_bytes"] == size
    if any(s["method"].startswith("prune") and s["sparsity"] > 0.5 for s in raw):
        assert info["sparse"] > 0
        for (k1, m1, n1, _), (k2, m2, n2, _) in zip(stored_tensors(model), stored_tensors(loaded)):
            a, b = m1._buffers.get(n1 + "_mask"), m2._buffers.get(n2 + "_mask")
            if a is not None and any(e["name"] == k1 and e.get("sparse") for e in blob["entries"]):
                assert torch.equal(a, b)


def test_payload_matches_theory_exactly(tmp_path, base, digits):
    """Every packed tensor takes ceil(numel * k / 8) bytes; every float tensor 4 bytes per element."""
    model, loaded, info, blob, same = _round_trip(tmp_path, base, digits, [{"method": "quant.uniform", "bits": 3}])
    expect = 0
    for key, m, name, t in stored_tensors(model):
        bits = m.storage_bits(name) if hasattr(m, "storage_bits") else None
        if bits is not None:
            expect += packed_nbytes(t.numel(), bits)
        elif t.dtype == torch.bool:
            expect += packed_nbytes(t.numel(), 1)
        else:
            expect += t.numel() * t.element_size()
    assert info["payload_bytes"] == expect
    assert blob["payload"].dtype == torch.uint8
    # the file is the payload plus a small index
    assert info["file_bytes"] < info["payload_bytes"] + 40_000


PRUNE80 = {"method": "prune.global_magnitude", "sparsity": 0.8}


@pytest.mark.parametrize("raw", [[{"method": "binarize"}], [{"method": "binarize"}, PRUNE80],
                                 [PRUNE80, {"method": "binarize"}]], ids=["binary", "binary+pruned", "pruned+binary"])
def test_binary_round_trip(tmp_path, base, digits, raw):
    """Pruned binary tensors keep their masks: +-alpha codes cannot hold the zeros, so they are stored sparse."""
    if "binarize" not in METHODS:
        pytest.skip("binary networks not installed")
    model, loaded, info, blob, same = _round_trip(tmp_path, base, digits, raw)
    assert same
    packed1 = [e for e in blob["entries"] if e.get("bits") == 1 and e["kind"] == "packed"]
    assert packed1 and all(e.get("sparse", False) == (len(raw) > 1) for e in packed1)
    size = compression_facts(model)["size_bytes"]
    assert abs(info["payload_bytes"] - size) <= 0.02 * size
    assert compression_facts(loaded)["size_bytes"] == size


def test_float16_is_smaller_and_close(tmp_path, base, digits):
    raw = [{"method": "quant.uniform", "bits": 8}]
    _, _, info32, _, _ = _round_trip(tmp_path, base, digits, raw)
    model, loaded, info16, blob, _ = _round_trip(tmp_path, base, digits, raw, float_dtype="float16")
    assert info16["payload_bytes"] < info32["payload_bytes"] and blob["float_dtype"] == "float16"
    x = digits.test.x[:16]
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=0.05, rtol=0.05)


def test_loads_as_data_and_rejects_foreign_files(tmp_path, base, digits):
    model, arch = _variant(base, digits, [{"method": "quant.uniform", "bits": 4}])
    path = tmp_path / "m.sturdy"
    export_model(model, path, arch)
    assert path.read_bytes()[:8] == b"STURDYPK"
    blob = read_packed(path)
    assert blob["format"] == "sturdynet-packed" and blob["version"] == 2 and len(blob["sha256"]) == 64
    blob = {k: v for k, v in blob.items() if k != "sha256"}
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a sturdynet packed model"):
        read_packed(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not found"):
        load_packed(tmp_path / "missing.sturdy")
    bad = dict(blob, version=1, arch=dict(arch, steps=[]))  # float structure, quantized tensors (a v1 file)
    torch.save(bad, tmp_path / "bad.sturdy")
    with pytest.raises(ValueError, match="do not match"):
        load_packed(tmp_path / "bad.sturdy")
    with pytest.raises(ValueError, match="float_dtype"):
        export_model(model, path, arch, float_dtype="bfloat16")


def test_cli_export(tmp_path, base, digits, capsys):
    from sturdynet.cli import main
    from sturdynet.run.checkpoint import save_checkpoint

    model, arch = _variant(base, digits, [{"method": "quant.uniform", "bits": 4, "act_bits": 8}])
    save_checkpoint(tmp_path / "v.pt", model, arch)
    assert main(["export", str(tmp_path / "v.pt"), "-o", str(tmp_path / "v.sturdy")]) == 0
    out = capsys.readouterr().out
    assert "bit for bit" in out and (tmp_path / "v.sturdy").exists()
    assert main(["export", "--inspect", str(tmp_path / "v.sturdy")]) == 0
    assert "packed4" in capsys.readouterr().out


def _grown_variant(digits, extra):
    """A bireal_resnet20 (width 2) grown by RA-BNN on digits (1 growth epoch, gates open), then ``extra``."""
    from sturdynet.train import TrainConfig

    spec = component(MODELS, {"name": "bireal_resnet20", "width": 2}, "model")
    raw = [{"method": "ra_bnn.grow", "grow_epochs": 1, "retrain_epochs": 0, "init_logit": 4.0, "l1": 0.0}] + extra
    steps = [component(METHODS, s, f"steps[{i}]", key="method") for i, s in enumerate(raw)]
    torch.manual_seed(0)
    base = model_for_data(spec, digits)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, eval_every=0)
    ctx = training_context(digits, cfg, seed=0)
    model = run_steps(base, steps, ctx).eval()
    assert model.widths == (4, 8, 16) != base.widths  # grown: every candidate channel kept
    return model, arch_of(spec, digits, steps)


@pytest.mark.parametrize("extra", [[], [{"method": "prune.global_magnitude", "sparsity": 0.8}]],
                         ids=["grown", "grown+pruned"])
def test_ra_bnn_grown_round_trip(tmp_path, digits, extra):
    """A packed export of a grown model reloads at the grown widths (as its checkpoint does), bit for bit."""
    from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint

    model, arch = _grown_variant(digits, extra)
    info = export_model(model, tmp_path / "g.sturdy", arch)
    loaded, blob = load_packed(tmp_path / "g.sturdy")
    save_checkpoint(tmp_path / "g.pt", model, arch)
    reloaded, _ = load_checkpoint(tmp_path / "g.pt")
    x = digits.test.x[:32]
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x)) and torch.equal(model(x), reloaded(x))
    assert loaded.widths == reloaded.widths == model.widths
    facts = compression_facts(model)
    assert compression_facts(loaded) == facts
    assert abs(info["payload_bytes"] - facts["size_bytes"]) <= 0.02 * facts["size_bytes"]
    assert any(e["kind"] == "packed" and e["bits"] == 1 for e in blob["entries"])
    assert (info["sparse"] > 0) == bool(extra)


def test_structured_global_round_trip(tmp_path, base, digits):
    """Channel counts chosen by a global batch-norm threshold come back from the stored shapes."""
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    raw = [{"method": "prune.structured", "amount": 0.5, "criterion": "bn", "scope": "global"}]
    _, loaded, info, _, same = _round_trip(tmp_path, model, digits, raw)
    assert same
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in base.parameters())


def test_file_is_the_payload_plus_a_compact_header_and_version_1_files_still_load(tmp_path, digits):
    """Issue 18 part 5: on disk within 2% of the payload from 10k parameters on."""
    small = Component("resnet20", ResNet20Params(depth=8, width=0.375))  # 10,852 parameters
    cases = [(small, []), (small, [{"method": "quant.uniform", "bits": 8}]),
             (small, [{"method": "quant.uniform", "bits": 4}]),
             (MODEL, [{"method": "binarize"}])]  # 1 bit per weight: 2% needs a larger model (68k)
    for spec, raw in cases:
        torch.manual_seed(0)
        dense = model_for_data(spec, digits).eval()
        assert sum(p.numel() for p in dense.parameters()) >= 10_000
        steps = [component(METHODS, r, f"steps[{i}]", key="method") for i, r in enumerate(raw)]
        model = run_steps(dense, steps, training_context(digits, TrainConfig(epochs=1), seed=0)).eval()
        arch = arch_of(spec, digits, steps)
        steps = raw
        path = tmp_path / f"m{len(steps)}.sturdy"
        info = export_model(model, path, arch)
        assert info["file_bytes"] == path.stat().st_size
        assert info["file_bytes"] <= 1.02 * info["payload_bytes"] + 40, info  # + the SHA-256 (32 bytes of entropy)
        loaded, blob = load_packed(path)
        x = digits.test.x[:16]
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))
        # the same contents in the version-1 container (torch.save with byte ranges) still load
        torch.save(dict(blob, version=1), tmp_path / "v1.sturdy")
        old, _ = load_packed(tmp_path / "v1.sturdy")
        with torch.no_grad():
            assert torch.equal(model(x), old(x))
    raw = path.read_bytes()
    (tmp_path / "cut.sturdy").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="payload holds"):
        read_packed(tmp_path / "cut.sturdy")
    (tmp_path / "v9.sturdy").write_bytes(raw[:8] + bytes([9]) + raw[9:])
    with pytest.raises(ValueError, match="version 9"):
        read_packed(tmp_path / "v9.sturdy")
