"""Contract of every registered data set (``DATASETS``) and model (``MODELS``).

Data sets: each builds a ``DataBundle`` from a tiny source written to a temporary folder
(or the embedded digits): float32 images (N, C, H, W) in [0, 1] of one size in every
split (read through ``batches``, so streamed splits count too), int64 labels in
[0, num_classes), one class name per class, one mean/std per channel, and the same seed
gives the same splits. A data set whose optional dependency does not import
(``UNAVAILABLE``) must instead fail with a one-line ConfigError naming it.

Models: each builds for the tiny input of its row, gives finite logits of shape
(N, classes) in eval mode, and trains (a backward pass reaches every trainable parameter).

To extend: a new data set needs a row in ``DATASET_CASES`` (a function writing its tiny
source under ``tmp_path`` and returning the data set's parameters) unless it builds from
its defaults. A new model runs on 1x8x8 inputs with its defaults; add a row to
``MODEL_CASES`` for another input or smaller widths.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import pytest
import torch

from sturdynet.core.params import ConfigError, component
from sturdynet.core.registry import DATASETS, MODELS
from sturdynet.data import load_data
from sturdynet.data.base import batches

from contract_helpers import assert_covers


def _npz(tmp: Path) -> Dict[str, Any]:
    rs = np.random.RandomState(0)
    np.savez(tmp / "tiny.npz", x_train=rs.randint(0, 256, (20, 6, 6, 3)).astype(np.uint8),
             y_train=np.arange(20) % 2, x_test=rs.randint(0, 256, (6, 6, 6, 3)).astype(np.uint8),
             y_test=np.arange(6) % 2)
    return {"path": str(tmp / "tiny.npz")}


def _imagefolder(tmp: Path) -> Dict[str, Any]:
    from PIL import Image

    rs = np.random.RandomState(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            d = tmp / "folder" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rs.randint(0, 256, (5, 5, 3)).astype(np.uint8)).save(d / f"{i}.png")
    return {"path": str(tmp / "folder")}


def _cifar10(tmp: Path) -> Dict[str, Any]:
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    rs = np.random.RandomState(0)
    for j, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = [(4 * j + k) % 10 for k in range(4)]  # every class has training images (data.base.check_classes)
        batch = {"labels": labels, "data": rs.randint(0, 256, (4, 3072)).astype(np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {"root": str(tmp)}


def _idx(path: Path, arr: np.ndarray) -> None:
    """An MNIST idx file (big-endian header: 0, 0, dtype 0x08, ndim, then the sizes)."""
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
                     + arr.astype(np.uint8).tobytes())


def _torchvision(tmp: Path) -> Dict[str, Any]:
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rs = np.random.RandomState(0)
    for prefix, n in (("train", 20), ("t10k", 6)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rs.randint(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return {"dataset": "MNIST", "root": str(tmp), "workers": 0}


def _torchvision_missing() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - RuntimeError beside a CPU torch build
        return True
    return False


#: data set -> writes a tiny source under tmp_path and returns the data set's parameters
DATASET_CASES: Dict[str, Callable[[Path], Dict[str, Any]]] = {
    "cifar10": _cifar10,
    "imagefolder": _imagefolder,
    "npz": _npz,
    "torchvision": _torchvision,
}

#: data set -> (condition, error text): when the condition holds (an optional dependency does
#: not import), the contract is a one-line ConfigError with that text instead of a bundle
UNAVAILABLE: Dict[str, Any] = {
    "torchvision": (_torchvision_missing, "torchvision does not import"),
}

#: model -> {"input": (channels, size), "params": {...}}; default: 1x8x8 inputs, default params
MODEL_CASES: Dict[str, Dict[str, Any]] = {
    "binary_vgg_small": {"params": {"width": 8}},
    "bireal_resnet18": {"params": {"width": 4}},
    "bireal_resnet20": {"params": {"width": 4}},
    "mlp": {"params": {"hidden": [16]}},
    "resnet18": {"params": {"width": 0.125}},
    "resnet20": {"params": {"width": 0.25}},
    "small_cnn": {"params": {"width": 4}},
    "vgg_small": {"params": {"width": 0.125}},
}

DATASET_NAMES = DATASETS.names()
MODEL_NAMES = MODELS.names()
COVERS = {"datasets": DATASET_NAMES, "models": MODEL_NAMES}  # read by test_contract_coverage.py


def test_contract_covers_every_data_set_and_model():
    assert_covers(DATASETS, DATASET_NAMES, DATASET_CASES)
    assert_covers(MODELS, MODEL_NAMES, MODEL_CASES)


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_data_set_builds_a_valid_bundle(name, tmp_path, monkeypatch):
    monkeypatch.setenv("STURDYNET_CACHE", str(tmp_path / "cache"))
    params = DATASET_CASES[name](tmp_path) if name in DATASET_CASES else {}
    spec = component(DATASETS, {"name": name, "val_fraction": 0.2, **params}, f"DATASET_CASES[{name!r}]")
    if name in UNAVAILABLE and UNAVAILABLE[name][0]():
        with pytest.raises(ConfigError, match=UNAVAILABLE[name][1]):
            load_data(spec, seed=0)
        return
    b = load_data(spec, seed=0)
    assert len(b.train) and len(b.test)
    c, size = b.in_channels, b.input_size
    assert len(b.class_names) == b.num_classes and len(b.mean) == len(b.std) == c
    for split in (b.train, b.val, b.test):  # in-memory or streamed: read through batches()
        for x, y in batches(split, 64):
            assert x.dtype == torch.float32 and x.shape[1:] == (c, *size)
            assert x.min() >= 0 and x.max() <= 1
            assert y.dtype == torch.int64 and len(y) == len(x)
            assert y.min() >= 0 and y.max() < b.num_classes
    again = load_data(spec, seed=0)
    for s1, s2 in ((b.train, again.train), (b.test, again.test)):
        (x1, y1), (x2, y2) = next(batches(s1, 64)), next(batches(s2, 64))
        assert torch.equal(x1, x2) and torch.equal(y1, y2), "the same seed gave other data"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_builds_and_trains(name):
    case = MODEL_CASES.get(name, {})
    channels, size = case.get("input", (1, 8))
    torch.manual_seed(0)
    model = MODELS.create(name, channels, 10, (size, size), (0.5,) * channels, (0.25,) * channels,
                          **case.get("params", {}))
    x = torch.rand(4, channels, size, size, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    model.train()
    model(x).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:3]}"
