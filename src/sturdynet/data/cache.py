"""Decoded-array cache for file-based data sets (outside the repository).

Decoding tens of thousands of image files takes longer than training one small batch
of epochs on them, so loaders store the decoded ``uint8`` arrays once as an
uncompressed ``.npz`` under ``$STURDYNET_CACHE`` (default ``~/.cache/sturdynet``) and
read them back in about a second. Entries are keyed by a hash of the source's absolute
path, size and modification time plus the decoding options, so a changed source gets a
new entry; files are written atomically (temporary file, then rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

CACHE_FORMAT = 1


def cache_dir() -> Path:
    """``$STURDYNET_CACHE`` if set, else ``~/.cache/sturdynet``."""
    env = os.environ.get("STURDYNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sturdynet"


def source_fingerprint(path: Path) -> Dict[str, Any]:
    """Identity of a file or directory tree: absolute path, total size, newest mtime, file count."""
    path = path.resolve()
    if path.is_file():
        st = path.stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "files": 1}
    size, newest, count = 0, 0, 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        newest = max(newest, os.stat(root).st_mtime_ns)
        for f in files:
            st = os.stat(os.path.join(root, f))
            size += st.st_size
            newest = max(newest, st.st_mtime_ns)
            count += 1
    return {"path": str(path), "size": size, "mtime_ns": newest, "files": count}


def cache_key(kind: str, fingerprint: Dict[str, Any], options: Dict[str, Any]) -> str:
    """A file name for the cache entry of ``kind`` built from a source and decoding options."""
    blob = json.dumps({"format": CACHE_FORMAT, "kind": kind, "source": fingerprint, "options": options},
                      sort_keys=True)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.npz"


def load_cached(name: str) -> Optional[Dict[str, np.ndarray]]:
    """The arrays stored under ``name``, or None when absent or unreadable."""
    p = cache_dir() / name
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None  # a truncated or foreign file: rebuild it


def save_cached(name: str, arrays: Dict[str, np.ndarray]) -> Optional[Path]:
    """Store ``arrays`` under ``name`` atomically; returns the path, or None if not writable."""
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache holds public data
        os.replace(tmp, d / name)
        return d / name
    except OSError:
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
