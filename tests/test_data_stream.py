"""Streamed data: npz memory-mapped and image folders decoded per batch give the same splits,
the same seeded batch order and the same statistics as the in-memory loaders, and a run
never decodes more than one batch (or one check's sample) at a time."""
from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from sturdynet.core.params import component
from sturdynet.core.registry import DATASETS
from sturdynet.data import load_data
from sturdynet.data.base import batches
from sturdynet.data.stream import FileSource, StreamSplit


@pytest.fixture(scope="module")
def digits_arrays():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * 255 / 16).astype(np.uint8)[:400], d.target[:400]


def _load(**kw):
    return load_data(component(DATASETS, kw, "data"), 0)


def _same(a, b):
    assert isinstance(b.train, StreamSplit) and not isinstance(a.train, StreamSplit)
    assert torch.equal(a.test.x, b.test.x[:]) and torch.equal(a.test.y, b.test.y)
    assert torch.equal(a.train.y, b.train.y) and torch.equal(a.val.y, b.val.y)
    assert a.mean == pytest.approx(b.mean, abs=1e-6) and a.std == pytest.approx(b.std, abs=1e-6)
    assert a.input_size == b.input_size and a.in_channels == b.in_channels
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for (x1, y1), (x2, y2) in zip(batches(a.train, 50, True, g1), batches(b.train, 50, True, g2)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_npz_stream_matches_in_memory(tmp_path, digits_arrays):
    x, y = digits_arrays
    np.savez(tmp_path / "d.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    a = _load(name="npz", path=str(tmp_path / "d.npz"))
    b = _load(name="npz", path=str(tmp_path / "d.npz"), stream=True, workers=1)
    _same(a, b)


def test_npz_stream_refuses_compressed(tmp_path, digits_arrays):
    x, y = digits_arrays
    np.savez_compressed(tmp_path / "c.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    with pytest.raises(ValueError, match="savez_compressed"):
        _load(name="npz", path=str(tmp_path / "c.npz"), stream=True)


@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz"])
def test_imagefolder_stream_matches_in_memory(tmp_path, digits_arrays, kind, monkeypatch):
    monkeypatch.setenv("STURDYNET_CACHE", str(tmp_path / "cache"))
    x, y = digits_arrays
    root = tmp_path / "imf"
    for i, (im, t) in enumerate(zip(x[:200], y[:200])):
        d = root / ("train" if i < 150 else "test") / str(t)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i}.png")
    path = root
    if kind != "dir":
        path = tmp_path / f"imf.{kind}"
        with tarfile.open(path, "w:gz" if kind == "tar.gz" else "w") as t:
            t.add(root, arcname="imf")
    a = _load(name="imagefolder", path=str(root), cache=False)
    b = _load(name="imagefolder", path=str(path), stream=True, workers=0 if kind == "tar" else 1)
    _same(a, b)


def test_run_decodes_one_batch_at_a_time(tmp_path, digits_arrays, monkeypatch):
    """Training, compression and the check battery on a streamed folder: no single decode is
    larger than the largest batch or check sample asked for (the whole folder is never held)."""
    from sturdynet.run.recipe import parse_recipe
    from sturdynet.run.runner import run_recipe

    x, y = digits_arrays
    root = tmp_path / "imf"
    for i, (im, t) in enumerate(zip(x, y)):
        d = root / ("train" if i < 320 else "test") / str(t)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i}.png")
    sizes = []
    orig = FileSource.load

    def spy(self, idx):
        sizes.append(len(idx))
        return orig(self, idx)

    monkeypatch.setattr(FileSource, "load", spy)
    recipe = parse_recipe({
        "data": {"name": "imagefolder", "path": str(root), "stream": True, "workers": 0},
        "model": {"name": "small_cnn", "width": 4}, "train": {"epochs": 2, "batch_size": 32},
        "variants": [{"name": "dense"}, {"name": "int8", "method": "quant.uniform", "bits": 8, "act_bits": 8,
                                          "calib_samples": 40}],
        "evaluate": [{"check": "clean", "batch_size": 32}, {"check": "pgd", "eps": 0.1, "steps": 2, "samples": 40},
                     {"check": "bfa", "samples": 40, "trials": 1, "max_flips": 2, "attack_batch": 16}]})
    res = run_recipe(recipe, tmp_path / "out")
    assert all(v["status"] == "ok" for v in res["variants"]), [v.get("error") for v in res["variants"]]
    assert res["variants"][0]["metrics"]["clean"]["samples"] == 80
    assert max(sizes) <= 256 and len(sizes) > 20  # 256: the statistics pass; training and checks use <= 64
