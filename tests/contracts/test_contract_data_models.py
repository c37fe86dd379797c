"""Contract of every registered data set (``DATASETS``) and model (``MODELS``).

Data sets: each builds a ``DataBundle`` from a tiny source written to a temporary folder
(or the embedded digits): float32 images (N, C, H, W) in [0, 1] of one size in every
split, int64 labels in [0, num_classes), one class name per class, one mean/std per
channel, and the same seed gives the same splits.

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

from sturdynet.core.params import component
from sturdynet.core.registry import DATASETS, MODELS
from sturdynet.data import load_data

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
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"labels": [int(v) for v in rs.randint(0, 10, 4)], "data": rs.randint(0, 256, (4, 3072)).astype(np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {"root": str(tmp)}


#: data set -> writes a tiny source under tmp_path and returns the data set's parameters
DATASET_CASES: Dict[str, Callable[[Path], Dict[str, Any]]] = {
    "cifar10": _cifar10,
    "imagefolder": _imagefolder,
    "npz": _npz,
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
    b = load_data(spec, seed=0)
    assert len(b.train) and len(b.test)
    c, size = b.in_channels, b.input_size
    assert len(b.class_names) == b.num_classes and len(b.mean) == len(b.std) == c
    for split in (b.train, b.val, b.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (c, *size)
        assert split.x.min() >= 0 and split.x.max() <= 1
        assert split.y.dtype == torch.int64 and len(split.y) == len(split.x)
        assert len(split.y) == 0 or (split.y.min() >= 0 and split.y.max() < b.num_classes)
    again = load_data(spec, seed=0)
    assert torch.equal(again.train.x, b.train.x) and torch.equal(again.test.y, b.test.y)


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
