"""Issue 14, bad files: integrity of checkpoints and exports (2), truncated archives (6),
loader errors (8), data-file errors (9), resource faults (10). Each test failed before its fix."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from sturdynet.cli import main
from sturdynet.core.atomic import _atomic, check_writable, write_json_atomic
from sturdynet.core.names import os_error_text
from sturdynet.core.params import Component
from sturdynet.data import load_data
from sturdynet.data.imagefolder import ImageFolderParams
from sturdynet.export.packed import export_model, load_packed
from sturdynet.models.arch import arch_of
from sturdynet.models.common import model_for_data
from sturdynet.models.mlp import MLPParams
from sturdynet.run.checkpoint import load_checkpoint, save_checkpoint
from sturdynet.run.recipe import parse_recipe
from sturdynet.run.runner import run_recipe


@pytest.fixture(scope="module")
def small(digits):
    torch.manual_seed(0)
    spec = Component("mlp", MLPParams(hidden=(16,)))
    return model_for_data(spec, digits).eval(), arch_of(spec, digits, (), Component("digits"))


def flip_byte(path, where: float = 0.7):
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * where)
    raw[i] ^= 0x10
    path.write_bytes(bytes(raw))


def one_line_exit_2(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


# -- 2: SHA-256 of checkpoints and exports --------------------------------------------------
@pytest.mark.parametrize("where", [0.2, 0.6, 0.95])
def test_one_flipped_checkpoint_byte_is_refused(tmp_path, small, where):
    model, arch = small
    p = tmp_path / "m.safetensors"
    digest = save_checkpoint(p, model, arch)
    assert load_checkpoint(p)[1]["sha256"] == digest
    flip_byte(p, where)
    with pytest.raises(ValueError, match=str(p)):
        load_checkpoint(p)


def test_one_flipped_export_byte_is_refused(tmp_path, small):
    model, arch = small
    p = tmp_path / "m.sturdy"
    info = export_model(model, p, arch)
    assert load_packed(p)[1]["sha256"] == info["sha256"]
    flip_byte(p, 0.8)
    with pytest.raises(ValueError, match="SHA-256"):
        load_packed(p)


def test_replaced_checkpoint_fails_the_recorded_hash(tmp_path, small):
    model, arch = small
    p = tmp_path / "m.safetensors"
    digest = save_checkpoint(p, model, arch)
    other = model_for_data(Component("mlp", MLPParams(hidden=(16,))), type("D", (), {
        "in_channels": 1, "num_classes": 10, "input_size": (8, 8), "mean": (0.3,), "std": (0.3,)})())
    save_checkpoint(p, other, arch)  # a valid file, but not the one recorded
    with pytest.raises(ValueError, match="not the one recorded"):
        load_checkpoint(p, expect_sha256=digest)


TINY = {"name": "tiny", "seed": 0, "data": {"name": "digits", "subset": {"train": 300, "test": 60}},
        "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1, "batch_size": 64},
        "variants": [{"name": "dense"}, {"name": "int8", "method": "quant.uniform", "bits": 8}],
        "evaluate": [{"check": "clean"}]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = run_recipe(parse_recipe(TINY), out)
    return out, res


def test_results_record_checkpoint_hashes(tiny_run):
    out, res = tiny_run
    data = json.loads((out / "results.json").read_text())
    assert len(data["base"]["sha256"]) == 64
    v = {x["name"]: x for x in data["variants"]}["int8"]
    assert v["checkpoint"] == "variants/int8.safetensors"
    assert load_checkpoint(out / v["checkpoint"])[1]["sha256"] == v["sha256"]


def test_resume_rebuilds_tampered_base_and_corrupt_variant(tmp_path, tiny_run, small):
    import shutil

    src, res = tiny_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    acc = {v["name"]: v["metrics"]["clean"]["accuracy"] for v in res["variants"]}
    model, arch = small
    save_checkpoint(out / "base.safetensors", model, arch)  # a self-consistent, but foreign, base
    flip_byte(out / "variants" / "int8.safetensors")
    recipe = dict(TINY, evaluate=[{"check": "clean"}, {"check": "clean", "id": "clean2"}])  # needs the models
    again = run_recipe(parse_recipe(recipe), out)
    by = {v["name"]: v for v in again["variants"]}
    assert all(v["status"] == "ok" for v in by.values())
    for name, a in acc.items():  # rebuilt deterministically: the same numbers as before
        assert by[name]["metrics"]["clean2"]["accuracy"] == a
    assert load_checkpoint(out / "variants" / "int8.safetensors", expect_sha256=by["int8"]["sha256"])


# -- 8: loader errors ----------------------------------------------------------------------
def test_empty_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    err = one_line_exit_2(["evaluate", str(p)], capsys)
    assert str(p) in err and "IndexError" not in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_with_code_is_refused_without_torch_advice(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pt"
    torch.save({"format": "sturdynet-checkpoint", "x": _Evil()}, p)
    err = one_line_exit_2(["evaluate", str(p)], capsys)
    assert not (tmp_path / "PWNED").exists()
    assert "weights_only=False" not in err and "\x1b" not in err and "holds objects other than tensors" in err


@pytest.mark.parametrize("blob", [
    {"format": "sturdynet-checkpoint", "arch": {"model": {"name": 5}}, "state_dict": {}},
    {"format": "sturdynet-checkpoint", "arch": {"model": {"name": "mlp"}}, "state_dict": {}},
    {"format": "sturdynet-checkpoint", "arch": [], "state_dict": []},
    {"format": "sturdynet-checkpoint", "arch": {"model": {"name": "mlp"}, "data": {"in_channels": "x"}},
     "state_dict": {"w": torch.zeros(2)}},
    {"format": "sturdynet-checkpoint"},
])
def test_structurally_wrong_checkpoints_name_the_file(tmp_path, blob):
    p = tmp_path / "w.pt"
    torch.save(blob, p)
    with pytest.raises(ValueError, match=str(p)):
        load_checkpoint(p)


def test_structurally_wrong_safetensors_checkpoint(tmp_path, small):
    from sturdynet.core.weights import save_weights

    model, arch = small
    p = tmp_path / "w.safetensors"
    save_weights(p, {"format": "sturdynet-checkpoint", "arch": dict(arch, data={}), "extra": {}},
                 {"state/" + k: v for k, v in model.state_dict().items()})
    with pytest.raises(ValueError, match=f"{p}: does not match its architecture"):
        load_checkpoint(p)


def test_nan_weights_are_refused(tmp_path, small):
    model, arch = small
    bad = __import__("copy").deepcopy(model)
    with torch.no_grad():
        next(bad.parameters())[0, 0] = float("nan")
    p = tmp_path / "nan.safetensors"
    save_checkpoint(p, bad, arch)
    with pytest.raises(ValueError, match="holds NaN values"):
        load_checkpoint(p)


def _rewrite_packed(p, change):
    """Edit a packed file's header with ``change(header)`` and write it back with a valid hash,
    as a crafted (not damaged) file would be."""
    import json
    import struct
    import zlib

    from sturdynet.export.packed import MAGIC, ZDICT, content_sha256

    raw = p.read_bytes()
    (hlen,) = struct.unpack("<I", raw[len(MAGIC) + 1:len(MAGIC) + 5])
    start = len(MAGIC) + 5
    d = zlib.decompressobj(zdict=ZDICT)
    header = json.loads(d.decompress(raw[start:start + hlen]) + d.flush())
    body = raw[start + hlen:]
    change(header)
    header["sha256"] = content_sha256(header, body)
    c = zlib.compressobj(9, zdict=ZDICT)
    head = c.compress(json.dumps(header).encode()) + c.flush()
    p.write_bytes(raw[:start - 4] + struct.pack("<I", len(head)) + head + body)


def test_structurally_wrong_packed_file(tmp_path, small):
    model, arch = small
    p = tmp_path / "m.sturdy"
    export_model(model, p, arch)
    _rewrite_packed(p, lambda h: h.update(tensors=[["x", "f", [10 ** 9], 0]]))  # beyond the payload
    with pytest.raises(ValueError, match=str(p)):
        load_packed(p)
    export_model(model, p, arch)
    _rewrite_packed(p, lambda h: h.update(tensors=["x"]))
    with pytest.raises(ValueError, match=f"{p}: malformed tensor entry"):
        load_packed(p)
    export_model(model, p, arch)
    _rewrite_packed(p, lambda h: h.update(arch={"model": {"name": "mlp"}}))
    with pytest.raises(ValueError, match=str(p)):
        load_packed(p)


def test_failed_export_verification_leaves_no_file(tmp_path, small, capsys, monkeypatch):
    import sturdynet.export.packed as packed

    model, arch = small
    ck = tmp_path / "m.safetensors"
    save_checkpoint(ck, model, arch)
    real = packed.load_packed

    def wrong(path, **kw):
        m, blob = real(path, **kw)
        with torch.no_grad():
            next(m.parameters()).add_(1.0)
        return m, blob
    monkeypatch.setattr(packed, "load_packed", wrong)
    assert main(["export", str(ck), "-o", str(tmp_path / "m.sturdy")]) == 1
    assert not (tmp_path / "m.sturdy").exists() and "verify failed" in capsys.readouterr().err


# -- 6 and 9: archives and data files --------------------------------------------------------
def _png(size=(16, 16), value=100) -> bytes:
    """A noisy grayscale PNG (noise keeps a .tar.gz of a few of them above 500 bytes)."""
    from PIL import Image

    noise = np.random.default_rng(value).integers(0, 255, size=size[::-1], dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _tar(path, members, mode="w"):
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(n_per_class=3):
    return [(f"{split}/{c}/{i}.png", _png(value=40 * i + 100 * (c == "b")))
            for split in ("train", "test") for c in ("a", "b") for i in range(n_per_class)]


def _load_folder(path):
    return load_data(Component("imagefolder", ImageFolderParams(path=str(path), cache=False, val_fraction=0.0)), 0)


def test_tar_cut_at_member_boundary_is_refused(tmp_path):
    full = tmp_path / "full.tar"
    _tar(full, _members())
    data = _load_folder(full)
    assert data.info["images"] == {"train": 6, "test": 6}
    raw = full.read_bytes()
    with tarfile.open(full) as tar:
        cut_at = tar.getmembers()[-2].offset  # just before the second-to-last member: a clean boundary
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[:cut_at])
    with pytest.raises(ValueError, match="truncated"):
        _load_folder(cut)


def test_tar_gz_cut_to_500_bytes_says_truncated(tmp_path):
    full = tmp_path / "full.tar.gz"
    _tar(full, _members(), mode="w:gz")
    cut = tmp_path / "cut.tar.gz"
    assert full.stat().st_size > 1500
    cut.write_bytes(full.read_bytes()[:500])
    with pytest.raises(ValueError, match=f"archive {cut} is truncated"):
        _load_folder(cut)


def test_decompression_bomb_png_names_the_image(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # a 40x40 image is then a "bomb"
    members = _members()
    members[0] = ("train/a/0.png", _png(size=(40, 40)))
    p = tmp_path / "bomb.tar"
    _tar(p, members)
    with pytest.raises(ValueError, match=r"image train/a/0\.png is too large"):
        _load_folder(p)


@pytest.mark.parametrize("x_train, match", [
    (np.zeros((6, 4, 4, 3, 1), np.uint8), r"x_train must have shape"),
    (np.zeros((6, 4, 4, 3), np.complex64), r"x_train must be uint8"),
])
def test_npz_shape_and_dtype_errors_name_the_file(tmp_path, x_train, match):
    from sturdynet.data.npz import NpzParams

    p = tmp_path / "d.npz"
    np.savez(p, x_train=x_train, y_train=np.arange(6) % 2, x_test=np.zeros((2, 4, 4, 3), np.uint8),
             y_test=np.arange(2))
    with pytest.raises(ValueError, match=f"{p}: {match}"):
        load_data(Component("npz", NpzParams(path=str(p))), 0)


# -- 10: resource faults --------------------------------------------------------------------
def test_disk_full_names_device_and_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "results.json"
    with pytest.raises(OSError) as e:
        write_json_atomic(target, {"a": 1})
    assert os_error_text(e.value) == f"no space left on device writing {target}"
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_torch_stream_error_on_full_disk_becomes_enospc(tmp_path, monkeypatch):
    import sturdynet.core.atomic as atomic

    monkeypatch.setattr(atomic, "_full", lambda folder: True)

    def write(tmp):
        raise RuntimeError("basic_ios::clear: iostream error")
    with pytest.raises(OSError) as e:
        _atomic(tmp_path / "base.pt", write)
    assert e.value.errno == errno.ENOSPC and os_error_text(e.value).endswith(f"writing {tmp_path / 'base.pt'}")


def test_unwritable_outputs_fail_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = one_line_exit_2(["train", "--out", str(blocker / "sub" / "m.safetensors")], capsys)
    assert str(blocker / "sub" / "m.safetensors") in err
    # evaluate checks --out before it even reads the (missing) checkpoint
    err = one_line_exit_2(["evaluate", str(tmp_path / "missing.safetensors"), "--out", str(blocker / "o.json")],
                          capsys)
    assert "o.json" in err and "not found" not in err
    with pytest.raises(OSError):
        check_writable(blocker / "run", folder=True)
    err = one_line_exit_2(["train", "--out", str(tmp_path)], capsys)  # a folder where a file should go
    assert "is a folder" in err


def test_leftover_plot_tmp_files_removed_on_render(tiny_run, tmp_path):
    import shutil

    from sturdynet.report.render import render_report

    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    (out / "plots").mkdir(exist_ok=True)
    (out / "plots" / "frontier.png.tmp").write_bytes(b"half")
    render_report(out)
    assert not list((out / "plots").glob("*.tmp"))


@pytest.mark.parametrize("raw", [b"", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
                                 + b" " * 50 + b"\n" + bytes(8)])
def test_empty_or_bare_npy_file_is_one_line(tmp_path, raw):
    from sturdynet.data.npz import NpzParams

    p = tmp_path / "d.npz"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=str(p)):
        load_data(Component("npz", NpzParams(path=str(p))), 0)


def test_weights_file_round_trips_plain_data_and_nested_tensors(tmp_path):
    import math

    from sturdynet.core.weights import load_weights, save_weights

    p = tmp_path / "w.safetensors"
    digest = save_weights(p, {"a": np.float32(1.5), "b": [float("nan"), (1, 2)], "c": {"t": torch.ones(2)}},
                          {"w": torch.arange(3)})
    header, tensors, again = load_weights(p)
    assert again == digest and header["a"] == 1.5 and math.isnan(header["b"][0]) and header["b"][1] == [1, 2]
    assert torch.equal(header["c"]["t"], torch.ones(2)) and torch.equal(tensors["w"], torch.arange(3))
    assert b"pickle" not in p.read_bytes()[:8] and p.read_bytes()[8:9] == b"{"
