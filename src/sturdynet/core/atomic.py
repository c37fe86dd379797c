"""Atomic file writes: a file is either the old one or the complete new one, never half."""
from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

#: key of a results mapping that says why a value is null: ``{"<json path>": "NaN" | "inf" | "-inf"}``
NULL_REASONS = "null_reasons"


def _atomic(path: Union[str, Path], write: Callable[[str], None]) -> Path:
    """Write through ``write(tmp_path)`` into a temporary file beside ``path``, then rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            if e.filename != str(path):
                raise OSError(e.errno, e.strerror or str(e), str(path)) from None
            raise
        if isinstance(e, RuntimeError) and _looks_like_io(e):  # torch.save's C++ stream errors
            code = errno.ENOSPC if _full(path.parent) else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from None
        raise
    return path


def _looks_like_io(e: BaseException) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("iostream", "file write failed", "unexpected pos", "write failed",
                                   "no space left"))


def _full(folder: Path) -> bool:
    """Whether the file system holding ``folder`` has no free blocks left."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < 1 << 16


def strict_json(obj: Any, path: str = "") -> Tuple[Any, Dict[str, str]]:
    """``obj`` with every NaN / inf float replaced by None, and where each one was.

    Returns:
        (the cleaned copy, ``{"variants[0].metrics.pgd.accuracy": "NaN", ...}``); the
        reasons use the JSON path of each replaced value. Tensors and numpy scalars are
        turned into plain numbers or lists first; tuples become lists.
    """
    reasons: Dict[str, str] = {}

    def walk(v: Any, at: str) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, (str, int)):
            return v
        if isinstance(v, float):
            if math.isfinite(v):
                return v
            reasons[at or "$"] = "NaN" if v != v else ("inf" if v > 0 else "-inf")
            return None
        if isinstance(v, dict):
            return {str(k): walk(x, f"{at}.{k}" if at else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{at}[{i}]") for i, x in enumerate(v)]
        tolist = getattr(v, "tolist", None)  # torch tensors, numpy arrays and scalars
        if callable(tolist):
            return walk(tolist(), at)
        raise TypeError(f"{at or 'value'}: {type(v).__name__} is not JSON data")

    return walk(obj, path), reasons


_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


def _resolves_to_null(obj: Any, path: str) -> bool:
    """Whether the JSON path ``a.b[0].c`` (as :func:`strict_json` writes it) names a null in ``obj``."""
    cur, pos = obj, 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or m.end() == pos:
            return False
        pos = m.end()
        try:
            cur = cur[int(m.group(1))] if m.group(1) is not None else cur[m.group(2)]
        except (KeyError, IndexError, TypeError):
            return False
    return cur is None


def dumps_strict(obj: Any, indent: Optional[int] = 1) -> str:
    """Strict JSON text (RFC 8259: no NaN or Infinity) of ``obj``; non-finite numbers are written
    as null, and when ``obj`` is a mapping their reasons go into its ``null_reasons`` key."""
    clean, reasons = strict_json(obj)
    if isinstance(clean, dict):
        old = clean.pop(NULL_REASONS, None)
        if isinstance(old, dict):  # reasons read back from an earlier file, for values still null
            reasons = {**{k: v for k, v in old.items() if _resolves_to_null(clean, k)}, **reasons}
        if reasons:
            clean[NULL_REASONS] = dict(sorted(reasons.items()))
    return json.dumps(clean, indent=indent, allow_nan=False)


def write_json_atomic(path: Union[str, Path], obj: Any) -> Path:
    """Strict JSON (indented; NaN / inf written as null with a reason: :func:`dumps_strict`),
    flushed to disk before it replaces ``path``."""
    text = dumps_strict(obj)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
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


def check_writable(path: Union[str, Path], folder: bool = False) -> Path:
    """Fail early, before any work, when ``path`` (a file, or a folder when ``folder``) cannot be
    written: creates the missing folders and tries a temporary file there.

    Raises:
        OSError: with ``filename`` set to ``path`` (the CLI turns it into one line, exit 2).
    """
    path = Path(path)
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", suffix=".tmp", dir=where)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    return path
