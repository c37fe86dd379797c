"""File-based data sets: npz, imagefolder (directory and tar archives), cifar10 pickles."""
from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sturdynet.core.params import Component, ConfigError, component
from sturdynet.data import load_data
from sturdynet.data.base import SubsetParams
from sturdynet.data.cifar10 import Cifar10Params, read_batch
from sturdynet.data.imagefolder import ImageFolderParams
from sturdynet.data.npz import NpzParams
from sturdynet.core.registry import DATASETS

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch, request):
    if "slow" not in request.keywords:
        monkeypatch.setenv("STURDYNET_CACHE", str(tmp_path / "cache"))


def load(name: str, seed: int = 0, **params):
    return load_data(component(DATASETS, {"name": name, **params}, "data"), seed=seed)


# ---------------------------------------------------------------- npz


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_uint8_nhwc_round_trip(tmp_path):
    rs = np.random.RandomState(0)
    xtr = rs.randint(0, 256, (20, 5, 6, 3), dtype=np.uint8)
    xte = rs.randint(0, 256, (10, 5, 6, 3), dtype=np.uint8)
    ytr, yte = np.arange(20) % 2, np.arange(10) % 2
    p = _npz(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
             class_names=np.array(["a", "b"]))
    b = load("npz", path=p, val_fraction=0.0)
    assert b.train.x.shape == (20, 3, 5, 6) and b.train.x.dtype == torch.float32
    assert b.class_names == ["a", "b"] and b.num_classes == 2
    # the bundle shuffles; match every test image back to its source
    src = torch.from_numpy(xte).permute(0, 3, 1, 2).float() / 255
    for x, y in zip(b.test.x, b.test.y):
        i = int(torch.nonzero((src - x).abs().flatten(1).amax(1) < 1e-7)[0])
        assert int(y) == yte[i]
    assert torch.equal(torch.sort(b.test.x.flatten()).values, torch.sort(src.flatten()).values)


def test_npz_float_nchw_and_grayscale(tmp_path):
    x = np.linspace(0, 1, 8 * 1 * 4 * 4, dtype=np.float32).reshape(8, 1, 4, 4)
    y = np.array([0, 1] * 4)
    b = load("npz", path=_npz(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x, y_test=y), val_fraction=0.0)
    assert b.in_channels == 1 and b.input_size == (4, 4)
    assert torch.allclose(torch.sort(b.test.x.flatten()).values, torch.sort(torch.from_numpy(x).flatten()).values)
    b3 = load("npz", path=_npz(tmp_path / "g.npz", x_train=(x[:, 0] * 255).astype(np.uint8), y_train=y,
                               x_test=(x[:, 0] * 255).astype(np.uint8), y_test=y), val_fraction=0.0)
    assert b3.in_channels == 1  # (N, H, W) arrays get a channel axis


@pytest.mark.parametrize("arrays, match", [
    (dict(x_train=np.zeros((4, 4, 4, 3), np.uint8), y_train=np.zeros(4, int), x_test=np.zeros((2, 4, 4, 3), np.uint8)),
     "missing array.*y_test"),
    (dict(x_train=np.zeros((4, 4, 4, 3), np.uint8), y_train=np.zeros(3, int), x_test=np.zeros((2, 4, 4, 3), np.uint8),
          y_test=np.zeros(2, int)), r"y_train must have shape \(4,\)"),
    (dict(x_train=np.zeros((4, 4, 4, 3), np.uint8), y_train=np.zeros(4, int), x_test=np.zeros((2, 5, 5, 3), np.uint8),
          y_test=np.zeros(2, int)), "x_train images are .* but x_test"),
    (dict(x_train=np.full((4, 4, 4, 3), 2.0), y_train=np.zeros(4, int), x_test=np.zeros((2, 4, 4, 3)),
          y_test=np.zeros(2, int)), r"must lie in \[0, 1\]"),
    (dict(x_train=np.zeros((4, 3, 4, 3), np.uint8), y_train=np.zeros(4, int), x_test=np.zeros((2, 3, 4, 3), np.uint8),
          y_test=np.zeros(2, int)), "NHWC or NCHW"),
    (dict(x_train=np.zeros((4, 4, 4, 3), np.int32), y_train=np.zeros(4, int), x_test=np.zeros((2, 4, 4, 3), np.int32),
          y_test=np.zeros(2, int)), "uint8"),
])
def test_npz_errors(tmp_path, arrays, match):
    with pytest.raises(ValueError, match=match):
        load("npz", path=_npz(tmp_path / "e.npz", **arrays))


def test_npz_refuses_pickled_objects_and_missing_file(tmp_path):
    obj = np.array([{"a": 1}], dtype=object)
    p = _npz(tmp_path / "o.npz", x_train=obj, y_train=obj, x_test=obj, y_test=obj)
    with pytest.raises(ValueError, match="pickle"):
        load("npz", path=p)
    with pytest.raises(ValueError, match="not found"):
        load("npz", path=str(tmp_path / "nope.npz"))
    with pytest.raises(ConfigError, match=r"data\.path: is required"):
        component(DATASETS, {"name": "npz"}, "data")


# ---------------------------------------------------------------- imagefolder

def _pixel(split: str, cls: int, i: int, size=(4, 4)) -> np.ndarray:
    """A distinct, exactly recoverable RGB image per (split, class, index)."""
    base = (cls * 60 + i * 10 + (5 if split == "test" else 0)) % 256
    h, w = size
    a = (np.arange(h * w * 3).reshape(h, w, 3) + base) % 256
    return a.astype(np.uint8)


def _write_tree(root: Path, classes=("cat", "dog"), n=(3, 2), size=(4, 4), gray=False) -> Path:
    from PIL import Image

    for split, count in zip(("train", "test"), n):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                a = _pixel(split, c, i, size)
                im = Image.fromarray(a[..., 0]) if gray else Image.fromarray(a)
                im.save(d / f"{i:03d}.png")
    return root


def _tar(src: Path, out: Path, arcname: str, mode: str) -> str:
    with tarfile.open(out, mode) as t:
        t.add(src, arcname=arcname)
    return str(out)


def _check_tree_bundle(b, classes=("cat", "dog"), n_train=3, n_test=2):
    assert b.class_names == list(classes)
    assert b.train.x.shape == (n_train * len(classes), 3, 4, 4) and len(b.test) == n_test * len(classes)
    for split, s in (("train", b.train), ("test", b.test)):
        for x, y in zip(s.x, s.y):
            hits = [i for i in range(n_train) if
                    torch.equal((x * 255).round().byte().permute(1, 2, 0), torch.from_numpy(_pixel(split, int(y), i)))]
            assert len(hits) == 1, "every image decodes to its own pixels with its folder's label"


@pytest.mark.parametrize("kind", ["dir", "tar.gz", "tgz-toplevel", "tar"])
def test_imagefolder_directory_and_archives(tmp_path, kind):
    tree = _write_tree(tmp_path / "tree")
    if kind == "dir":
        path = str(tree)
    elif kind == "tar.gz":
        path = _tar(tree, tmp_path / "t.tar.gz", ".", "w:gz")
    elif kind == "tgz-toplevel":
        path = _tar(tree, tmp_path / "t.tgz", "mydata", "w:gz")
    else:
        path = _tar(tree, tmp_path / "t.tar", "mydata", "w")
    b = load("imagefolder", path=path, val_fraction=0.0)
    _check_tree_bundle(b)
    assert b.info["from_cache"] is False
    again = load("imagefolder", path=path, val_fraction=0.0)
    assert again.info["from_cache"] is True
    assert torch.equal(again.train.x, b.train.x) and torch.equal(again.test.y, b.test.y)
    assert list((tmp_path / "cache").glob("imagefolder-*.npz"))


def test_imagefolder_no_cache_and_grayscale_and_resize(tmp_path):
    tree = _write_tree(tmp_path / "g", gray=True, size=(6, 6))
    b = load("imagefolder", path=str(tree), cache=False, val_fraction=0.0)
    assert b.in_channels == 1 and b.input_size == (6, 6)
    assert not (tmp_path / "cache").exists()
    rgb = load("imagefolder", path=str(tree), channels="rgb", image_size=3, val_fraction=0.0)
    assert rgb.in_channels == 3 and rgb.input_size == (3, 3)
    assert torch.equal(rgb.train.x[:, 0], rgb.train.x[:, 1])


def _remove_images(d: Path) -> None:
    for f in d.iterdir():
        f.unlink()


@pytest.mark.parametrize("case, match", [
    ("missing", "not found"),
    ("no_test", r"no test/ folder"),
    ("empty_class", r"class folder train/dog has no images"),
    ("bad_image", r"cannot decode image test/cat/000\.png"),
    ("sizes", r"image train/dog/001\.png is 5x5 but"),
    ("classes", r"train and test class folders differ \(only in train: \['dog'\]"),
    ("not_archive", "not a .tar"),
])
def test_imagefolder_errors(tmp_path, case, match):
    from PIL import Image

    tree = _write_tree(tmp_path / "e")
    path = str(tree)
    if case == "missing":
        path = str(tmp_path / "nowhere")
    elif case == "no_test":
        for d in (tree / "test").iterdir():
            _remove_images(d)
            d.rmdir()
        (tree / "test").rmdir()
    elif case == "empty_class":
        _remove_images(tree / "train" / "dog")
    elif case == "bad_image":
        (tree / "test" / "cat" / "000.png").write_bytes(b"not a png")
    elif case == "sizes":
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tree / "train" / "dog" / "001.png")
    elif case == "classes":
        _remove_images(tree / "test" / "dog")
        (tree / "test" / "dog").rmdir()
    elif case == "not_archive":
        path = str(tmp_path / "x.zip")
        Path(path).write_bytes(b"zip")
    with pytest.raises(ValueError, match=match):
        load("imagefolder", path=path)


def test_imagefolder_error_in_archive_names_member(tmp_path):
    tree = _write_tree(tmp_path / "a")
    _remove_images(tree / "test" / "dog")
    path = _tar(tree, tmp_path / "a.tar.gz", "top", "w:gz")
    with pytest.raises(ValueError, match=r"class folder top/test/dog has no images"):
        load("imagefolder", path=path)
    with pytest.raises(ConfigError, match=r"data\.path: is required"):
        component(DATASETS, {"name": "imagefolder"}, "data")


# ---------------------------------------------------------------- splits


def _npz_classes(tmp_path, counts=(30, 60, 90)) -> str:
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    x = (np.arange(len(y) * 4) % 256).astype(np.uint8).reshape(len(y), 2, 2, 1)
    x[:, 0, 0, 0] = np.arange(len(y)) % 256  # unique-ish first pixel per sample
    return _npz(tmp_path / "c.npz", x_train=x, y_train=y, x_test=x, y_test=y)


def test_stratified_subset_counts(tmp_path):
    p = _npz_classes(tmp_path)
    b = load("npz", path=p, val_fraction=0.1, subset={"train": 60, "val": 6, "test": 30})
    assert len(b.train) == 60 and len(b.val) == 6 and len(b.test) == 30
    assert torch.bincount(b.train.y).tolist() == [10, 20, 30]
    assert torch.bincount(b.val.y).tolist() == [1, 2, 3]
    assert torch.bincount(b.test.y).tolist() == [5, 10, 15]
    full = load("npz", path=p, val_fraction=0.1)
    assert torch.bincount(full.val.y).tolist() == [3, 6, 9] and len(full.train) == 162


def test_same_seed_same_data_other_seed_other_order(tmp_path):
    tree = _write_tree(tmp_path / "s", n=(10, 4))
    path = _tar(tree, tmp_path / "s.tar.gz", "s", "w:gz")
    kw = dict(path=path, val_fraction=0.2, subset={"train": 8})
    a, b, c = load("imagefolder", 3, **kw), load("imagefolder", 3, **kw), load("imagefolder", 4, **kw)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
    assert not torch.equal(a.train.x, c.train.x)
    assert a.mean == b.mean and len(a.mean) == 3


# ---------------------------------------------------------------- cifar10 pickles


def _write_cifar(root: Path, n: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rs = np.random.RandomState(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"batch_label": name, "labels": [int(v) for v in rs.randint(0, 10, n)],
             "data": rs.randint(0, 256, (n, 3072)).astype(np.uint8), "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "num_cases_per_batch": n, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_cifar10_pickle_folder(tmp_path):
    folder = _write_cifar(tmp_path)
    for root in (tmp_path, folder):  # the folder or its parent
        b = load("cifar10", root=str(root), val_fraction=0.0)
        assert len(b.train) == 20 and len(b.test) == 4 and b.input_size == (32, 32)
        assert b.class_names[0] == "airplane" and b.num_classes == 10
    d = read_batch(folder / "test_batch")
    want = torch.from_numpy(d["data"].reshape(-1, 3, 32, 32)).float() / 255  # rows are R, G, B planes
    got = b.test.x
    for w in want:
        assert any(torch.equal(w, g) for g in got)


def test_cifar10_reads_numpy1_module_names(tmp_path):
    """Batches written by Python 2 / NumPy 1 name numpy.core.multiarray._reconstruct."""
    folder = _write_cifar(tmp_path)
    raw = (folder / "test_batch").read_bytes()
    legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert legacy != raw or b"numpy.core.multiarray" in raw
    (folder / "test_batch").write_bytes(legacy)
    d = read_batch(folder / "test_batch")
    assert d["data"].shape == (4, 3072) and d["data"].dtype == np.uint8 and len(d["labels"]) == 4


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_foreign_pickles(tmp_path):
    folder = _write_cifar(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Evil()}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load global"):
        load("cifar10", root=str(tmp_path))


def test_cifar10_missing_files_and_download_without_torchvision(tmp_path):
    with pytest.raises(ValueError, match="lacks data_batch_1"):
        load("cifar10", root=str(tmp_path))
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"sturdynet\[torchvision\]"):
            load("cifar10", root=str(tmp_path), download=True)
    assert Cifar10Params(root="x").download is False


# ---------------------------------------------------------------- the real archive


@pytest.mark.slow
def test_real_cifar10_jpeg_archive_subset():
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} not present")
    b = load("imagefolder", path=str(ARCHIVE), val_fraction=0.1, subset={"train": 2000, "val": 200, "test": 500})
    assert b.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert b.train.x.shape == (2000, 3, 32, 32) and len(b.val) == 200 and len(b.test) == 500
    assert torch.bincount(b.train.y).tolist() == [200] * 10
    assert all(0.40 < m < 0.53 for m in b.mean) and all(0.2 < s < 0.3 for s in b.std)
    assert float(b.train.x.min()) >= 0 and float(b.train.x.max()) <= 1
