"""CIFAR-10 from torchvision's ``cifar-10-batches-py`` folder (the python pickle batches).

``root`` is that folder or its parent. The batches are pickles, and unpickling can run
arbitrary code, so they are read with :class:`CifarUnpickler`, which resolves only the
few globals a pickled NumPy array needs and refuses everything else. ``download: true``
fetches the archive with torchvision (the ``sturdynet[torchvision]`` extra) when the
folder is missing; the loading itself never needs torchvision.
"""
from __future__ import annotations

import importlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from ..core.params import ConfigError
from ..core.registry import DATASETS
from .arrays import to_float_tensor
from .base import DataBundle, DataParams, make_bundle

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"

# (module, name) pairs a CIFAR batch may reference: NumPy array reconstruction only.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("_codecs", "encode"): ("_codecs",),  # protocol-2 pickles of bytes written by Python 3
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that only builds NumPy arrays, lists, dicts, strings and numbers."""

    def find_class(self, module: str, name: str) -> Any:
        mods = _ALLOWED.get((module, name))
        if mods is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a CIFAR batch")
        for m in mods:
            try:
                return getattr(importlib.import_module(m), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


def read_batch(path: Path) -> Dict[str, Any]:
    """Unpickle one batch file safely; keys are returned as ``str``."""
    try:
        obj = CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: not a CIFAR batch ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _images_labels(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    d = read_batch(path)
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path}: CIFAR batch lacks 'data' or 'labels' (has {sorted(d)})")
    x = np.asarray(d["data"])
    y = np.asarray(d["labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, "
                         f"got {x.dtype} {x.shape} and {y.shape[0]} labels")
    return x.reshape(-1, 3, 32, 32), y


def find_folder(root: Path) -> Path:
    """``root`` itself if it holds the batches, else ``root / cifar-10-batches-py``."""
    return root if (root / TEST_FILE).is_file() else root / FOLDER


def read_cifar10(root: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, List[str]]:
    """(x_train, y_train, x_test, y_test, class_names), images uint8 (N, 3, 32, 32)."""
    folder = find_folder(root)
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"CIFAR-10 folder {folder} lacks {', '.join(missing)} "
                         f"(set download: true with torchvision installed, or point root at {FOLDER})")
    parts = [_images_labels(folder / f) for f in TRAIN_FILES]
    x_test, y_test = _images_labels(folder / TEST_FILE)
    names = [str(i) for i in range(10)]
    if (folder / META_FILE).is_file():
        meta = read_batch(folder / META_FILE)
        names = [str(n) for n in meta.get("label_names", names)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            x_test, y_test, names)


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import CIFAR10
    except ImportError:
        raise ValueError("cifar10 download: true needs torchvision; install it with "
                         "pip install 'sturdynet[torchvision]' or download cifar-10-python.tar.gz "
                         f"yourself and extract it into {root}") from None
    CIFAR10(str(root), train=True, download=True)


@dataclass(frozen=True)
class Cifar10Params(DataParams):
    """``root``: the ``cifar-10-batches-py`` folder or its parent; ``download``: fetch it
    with torchvision when missing."""

    root: str = ""
    download: bool = False

    def __post_init__(self) -> None:
        if not self.root:
            raise ConfigError("root", f"is required (the {FOLDER} folder or its parent)")


@DATASETS.register("cifar10", params=Cifar10Params)
def load_cifar10(params: Cifar10Params, seed: int) -> DataBundle:
    """Load CIFAR-10 (50,000 train, 10,000 test, 3x32x32) as floats in [0, 1]."""
    root = Path(params.root).expanduser()
    if params.download and not (find_folder(root) / TEST_FILE).is_file():
        _download(root)
    x_train, y_train, x_test, y_test, names = read_cifar10(root)
    return make_bundle("cifar10", to_float_tensor(x_train, "train images"), torch.from_numpy(y_train),
                       to_float_tensor(x_test, "test images"), torch.from_numpy(y_test), params, seed,
                       class_names=names, info={"source": str(find_folder(root))})
