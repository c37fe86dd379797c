import pytest
import torch
from torch import nn

from sturdynet.core.params import Component
from sturdynet.prune.global_magnitude import GlobalMagnitude, GlobalMagnitudeParams
from sturdynet.quant.uniform_method import UniformParams, UniformQuant
from sturdynet.core.storage import compression_facts
from sturdynet.models.arch import arch_of
from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint


def tiny():
    return nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(8, 3), nn.Linear(3, 2))


def test_float_size_is_32_bits_per_value():
    m = tiny()
    # conv 18 + linear 24+3 + linear 6+2 = 53 values * 4 bytes
    assert compression_facts(m)["size_bytes"] == 53 * 4


def test_quantized_layer_counts_k_bits_plus_scales():
    m = UniformQuant().apply(tiny(), UniformParams(bits=4, quantize_first=False, quantize_last=False))
    # middle linear quantized: 24 weights * 4 bits, 3 float scales, 3 float biases and the
    # quantizer's 1-bit signedness flag; conv (18) and last linear (6 + 2) stay float
    bits = 24 * 4 + 3 * 32 + 3 * 32 + 1 + (18 + 8) * 32
    assert compression_facts(m)["size_bytes"] == (bits + 7) // 8
    assert compression_facts(m)["bits"] == 4


def test_sparse_layer_counts_nonzeros_plus_bitmask():
    m = tiny()
    p = GlobalMagnitude().apply(m, GlobalMagnitudeParams(sparsity=0.5))
    f = compression_facts(p)
    kept = sum(int(mod.weight_mask.sum()) for mod in p.modules() if hasattr(mod, "weight_mask"))
    assert kept == 48 - 24
    # per weight tensor: min(dense, nnz*32 + numel) bits
    expect_bits = 0
    for mod in p.modules():
        if hasattr(mod, "weight_mask"):
            n, k = mod.weight.numel(), int(mod.weight_mask.sum())
            expect_bits += min(n * 32, k * 32 + n)
    expect_bits += (3 + 2) * 32  # biases
    assert f["size_bytes"] == (expect_bits + 7) // 8
    assert f["sparsity"] == pytest.approx(0.5)


def test_global_threshold_exact_count():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 2))
    p = GlobalMagnitude().apply(m, GlobalMagnitudeParams(sparsity=0.9))
    assert all(hasattr(mod, "weight_mask") for mod in p)
    total = sum(int(mod.weight_mask.numel() - mod.weight_mask.sum()) for mod in p if hasattr(mod, "weight_mask"))
    assert total == round(0.9 * 5100)
    assert m[0].weight.count_nonzero() == 5000  # the original model is untouched


def test_checkpoint_round_trip_weights_only(tmp_path, digits, trained_cnn):
    spec = Component("small_cnn", __import__("sturdynet.models.small_cnn", fromlist=["x"]).SmallCNNParams(width=8))
    steps = (Component("quant.uniform", UniformParams(bits=4)),)
    q = UniformQuant().apply(trained_cnn, steps[0].params)
    path = tmp_path / "q.pt"
    save_checkpoint(path, q, arch_of(spec, digits, steps))
    loaded, blob = load_checkpoint(path)
    x = digits.test.x[:16]
    assert torch.equal(loaded(x), q.eval()(x))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: no pickle
        assert '"sturdynet-checkpoint"' in f.metadata()["sturdynet"] and len(f.metadata()["sha256"]) == 64
    legacy = tmp_path / "old.pt"  # checkpoints of earlier versions (torch.save) still load, weights_only
    torch.save({"format": "sturdynet-checkpoint", "version": 1, "arch": blob["arch"],
                "state_dict": blob["state_dict"], "extra": {}}, legacy)
    old, old_blob = load_checkpoint(legacy)
    assert torch.equal(old(x), q.eval()(x)) and old_blob["sha256"] is None


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_checkpoint(bad)
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a sturdynet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
