"""Array helpers shared by the file-based loaders: layout detection and uint8 -> float."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import check_batch


def to_nchw(x: np.ndarray, layout: str = "auto", what: str = "images") -> np.ndarray:
    """Return ``x`` as (N, C, H, W) without changing its dtype.

    Args:
        x: (N, H, W), (N, H, W, C) or (N, C, H, W) array.
        layout: ``"nhwc"``, ``"nchw"`` or ``"auto"`` (channels-last when the last axis is
            1 or 3 and axis 1 is not; channels-first when axis 1 is 1 or 3 and the last is not).

    Raises:
        ValueError: for other ranks, or an ambiguous shape under ``auto``.
    """
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{what} must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), got {x.shape}")
    if layout == "nhwc":
        return x.transpose(0, 3, 1, 2)
    if layout == "nchw":
        return x
    if layout != "auto":
        raise ValueError(f"layout must be auto, nhwc or nchw, got {layout!r}")
    last, first = x.shape[3] in (1, 3), x.shape[1] in (1, 3)
    if last and not first:
        return x.transpose(0, 3, 1, 2)
    if first and not last:
        return x
    raise ValueError(f"cannot tell whether {what} of shape {x.shape} are NHWC or NCHW; set layout")


def to_float_tensor(x: np.ndarray, what: str = "images") -> Tensor:
    """(N, C, H, W) uint8 (0..255, divided by 255) or float in [0, 1] -> contiguous float32 tensor.

    The conversion happens once, on a contiguous uint8 copy, so the float tensor is the
    only large allocation.
    """
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.to(torch.float32).div_(255.0)
    if np.issubdtype(x.dtype, np.floating):
        with np.errstate(over="ignore", invalid="ignore"):
            big = np.ascontiguousarray(x, dtype=np.float32)  # float64 beyond float32 becomes inf: refused below
        t = torch.from_numpy(big)
        check_batch(t, what=what)
        return t
    raise ValueError(f"{what} must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}")


def to_label_tensor(y: np.ndarray, n: int, what: str = "labels") -> Tensor:
    """Integer labels of shape (n,) or (n, 1) -> int64 tensor of shape (n,)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {y.dtype}")
    if y.dtype == np.uint64 and n and int(y.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{what}: label {int(y.max())} is out of range")
    t = torch.from_numpy(y.astype(np.int64))
    check_batch(t.new_zeros((0,)).float(), t, None, what)
    return t
