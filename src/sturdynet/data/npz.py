"""Arrays in a NumPy ``.npz`` file: ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Images may be ``uint8`` (0..255, divided by 255) or float in [0, 1], laid out
(N, H, W), (N, H, W, C) or (N, C, H, W) (``layout: auto`` detects channels-last when
the last axis is 1 or 3). Labels are integers 0..K-1. An optional ``class_names``
string array names the classes. The file is read with ``allow_pickle=False``.
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..core.names import first_line
from ..core.params import ConfigError, rng
from ..core.registry import DATASETS
from .arrays import to_float_tensor, to_label_tensor, to_nchw
from .base import DataBundle, DataParams, make_bundle

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class NpzParams(DataParams):
    """``path`` to the ``.npz`` file; ``layout`` of the image arrays (auto, nhwc, nchw)."""

    path: str = ""
    layout: Literal["auto", "nhwc", "nchw"] = "auto"
    stream: bool = False  # memory-map the image arrays and decode per batch (data/stream.py)
    workers: int = rng(0, None, default=2)  # DataLoader worker processes when streaming

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("path", "is required (a .npz file with x_train, y_train, x_test, y_test)")


@DATASETS.register("npz", params=NpzParams)
def load_npz(params: NpzParams, seed: int) -> DataBundle:
    """Load and validate the four arrays, converting images to float once."""
    path = Path(params.path).expanduser()
    if not path.is_file():
        raise ValueError(f"npz file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:  # empty, cut, damaged
        raise ValueError(f"cannot read {path} as .npz: {first_line(e)}") from None
    if not hasattr(z, "files"):  # np.load also reads a bare .npy array
        raise ValueError(f"{path}: a single .npy array, not an .npz archive with x_train, y_train, x_test, y_test")
    with z:
        missing = [k for k in REQUIRED if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(z.files) or 'none'})")
        if params.stream:
            return _stream_npz(path, z, params, seed)
        try:
            arrays = {k: z[k] for k in REQUIRED}
            names = [str(c) for c in z["class_names"]] if "class_names" in z.files else None
        except ValueError as e:  # object arrays need pickle; bad headers
            raise ValueError(f"{path}: {first_line(e)}") from None
        except MemoryError:
            raise ValueError(f"{path}: an array is too large to load") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:  # truncated or corrupt members
            raise ValueError(f"{path}: corrupt .npz member ({type(e).__name__}: {first_line(e)})") from None
    if names is not None and (len(names) != len(set(names)) or any(not n.strip() for n in names)):
        raise ValueError(f"{path}: class_names must be distinct, non-blank strings")
    out = {}
    for split in ("train", "test"):
        x = to_nchw(arrays[f"x_{split}"], params.layout, f"{path}: x_{split}")
        out[f"x_{split}"] = to_float_tensor(x, f"{path}: x_{split}")
        out[f"y_{split}"] = to_label_tensor(arrays[f"y_{split}"], x.shape[0], f"{path}: y_{split}")
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise ValueError(f"{path}: x_train images are {tuple(out['x_train'].shape[1:])} (C, H, W) but x_test "
                         f"images are {tuple(out['x_test'].shape[1:])}")
    return make_bundle("npz", out["x_train"], out["y_train"], out["x_test"], out["y_test"], params, seed,
                       class_names=names, info={"source": str(path)})


def _stream_npz(path: Path, z, params: NpzParams, seed: int) -> DataBundle:
    """Images memory-mapped from the (uncompressed) file, labels in memory."""
    from .stream import make_stream_bundle, npz_source

    names = [str(c) for c in z["class_names"]] if "class_names" in z.files else None
    srcs, ys = {}, {}
    for split in ("train", "test"):
        srcs[split] = npz_source(path, f"x_{split}", params.layout)
        ys[split] = to_label_tensor(z[f"y_{split}"], len(srcs[split]), f"y_{split}")
    return make_stream_bundle("npz", srcs["train"], ys["train"], srcs["test"], ys["test"], params, seed,
                              class_names=names, info={"source": str(path)}, workers=params.workers)
