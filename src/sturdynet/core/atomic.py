"""Atomic file writes: a file is either the old one or the complete new one, never half."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union


def _atomic(path: Union[str, Path], write: Callable[[str], None]) -> Path:
    """Write through ``write(tmp_path)`` into a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: Union[str, Path], obj: Any) -> Path:
    """JSON (indented, NaN allowed), flushed to disk before it replaces ``path``."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
    return _atomic(path, write)


def torch_save_atomic(path: Union[str, Path], obj: Any) -> Path:
    """``torch.save`` of plain data (dicts, lists, tensors), atomically."""
    import torch

    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def write_bytes_atomic(path: Union[str, Path], data: bytes) -> Path:
    """Raw bytes (such as a checkpoint serialized elsewhere), flushed to disk, atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return _atomic(path, write)
