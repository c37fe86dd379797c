"""Weights files: safetensors with a JSON header and a SHA-256 of the content, no pickle.

Checkpoints and packed exports are written in the safetensors format
(https://github.com/huggingface/safetensors): an 8-byte header length, a JSON header
(tensor names, dtypes, shapes, byte ranges, and a string map ``__metadata__``), then
the raw tensor bytes. Reading it parses JSON and copies bytes; nothing is unpickled,
so a hostile file cannot run code.

sturdynet's own header (plain data: format, architecture, training history, ...) sits
in ``__metadata__["sturdynet"]`` as JSON. Tensors nested anywhere inside the header
(a checkpoint's initial weights) are stored as tensors named ``x/<path>`` and put back
on load. ``__metadata__["sha256"]`` is the SHA-256 of the content: every tensor's name,
dtype, shape and bytes (in name order) and the canonical header JSON. Loading verifies
it, so one flipped byte anywhere in the file is an error naming the file; run folders
also record it in results.json, which catches a file replaced as a whole.

Files written by earlier versions (``torch.save`` zip archives) still load, with
``torch.load(..., weights_only=True)`` (data only); they carry no hash.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .atomic import _atomic
from .names import first_line

#: the largest JSON header accepted (safetensors' own limit is 100 MB)
MAX_HEADER = 100 * 1024 * 1024
_TENSOR_PREFIX = "x/"
_ZIP_MAGIC = b"PK\x03\x04"


def content_sha256(tensors: Dict[str, Tensor], header_json: str) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes (sorted by name), then the header."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(header_json.encode())
    return h.hexdigest()


def _split_tensors(obj: Any, path: str, out: Dict[str, Tensor]) -> Any:
    """``obj`` with every tensor replaced by ``{"__tensor__": key}`` and the tensor put in ``out``."""
    if isinstance(obj, Tensor):
        key = _TENSOR_PREFIX + path
        out[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{path}/{k}" if path else str(k), out) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{path}/{i}", out) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}  # JSON has no NaN / inf
    if not isinstance(obj, (str, int, float, bool, type(None))) and callable(getattr(obj, "tolist", None)):
        return _split_tensors(obj.tolist(), path, out)  # numpy arrays and scalars
    return obj


def _join_tensors(obj: Any, tensors: Dict[str, Tensor], where: str) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise ValueError(f"{where}: header names a missing tensor {str(key)[:80]!r}")
            return tensors[key]
        if set(obj) == {"__float__"} and obj["__float__"] in ("nan", "inf", "-inf"):
            return float(obj["__float__"])
        return {k: _join_tensors(v, tensors, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors, where) for v in obj]
    return obj


def weights_bytes(header: Dict[str, Any], tensors: Dict[str, Tensor]) -> Tuple[bytes, str]:
    """The file :func:`save_weights` writes, as bytes, and its content SHA-256."""
    from safetensors.torch import save as st_save

    stored: Dict[str, Tensor] = {}
    for k, t in tensors.items():
        if k.startswith(_TENSOR_PREFIX):
            raise ValueError(f"tensor name {k!r} uses the reserved prefix {_TENSOR_PREFIX!r}")
        stored[k] = t
    plain = _split_tensors(header, "", stored)
    stored = {k: v.detach().to("cpu").contiguous().clone() for k, v in stored.items()}
    header_json = json.dumps(plain, sort_keys=True, allow_nan=False)
    digest = content_sha256(stored, header_json)
    return st_save(stored, metadata={"sturdynet": header_json, "sha256": digest}), digest


def save_weights(path: Union[str, Path], header: Dict[str, Any], tensors: Dict[str, Tensor]) -> str:
    """Write ``tensors`` plus ``header`` (plain data; nested tensors allowed) atomically.

    Args:
        path: the file to write.
        header: JSON-able data (tensors inside are stored as tensors).
        tensors: the top-level tensors (names must not start with ``x/``).

    Returns:
        The content SHA-256 stored in the file (record it to verify the file later).
    """
    data, digest = weights_bytes(header, tensors)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    _atomic(path, write)
    return digest


def _read_header(raw: bytes, where: str) -> Tuple[Dict[str, Any], int]:
    if len(raw) < 8:
        raise ValueError(f"{where}: not a weights file (empty or truncated: {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise ValueError(f"{where}: not a weights file (truncated or damaged header)")
    try:
        head = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError(f"{where}: damaged weights file (its header is not valid JSON)") from None
    if not isinstance(head, dict):
        raise ValueError(f"{where}: damaged weights file (its header is not a mapping)")
    return head, 8 + n


def looks_like_safetensors(raw: bytes) -> bool:
    """Whether bytes start like a safetensors file (8-byte length, then ``{``)."""
    return len(raw) >= 9 and raw[8:9] == b"{"


def is_safetensors(path: Union[str, Path]) -> bool:
    """Whether the file starts like a safetensors file (8-byte length, then ``{``)."""
    try:
        with open(path, "rb") as f:
            start = f.read(9)
    except OSError:
        return False
    return looks_like_safetensors(start)


def stored_sha256(raw: bytes) -> Optional[str]:
    """The SHA-256 a weights file declares (not verified: :func:`parse_weights` does that)."""
    try:
        meta = _read_header(raw, "")[0].get("__metadata__")
    except ValueError:
        return None
    digest = meta.get("sha256") if isinstance(meta, dict) else None
    return digest if isinstance(digest, str) else None


def load_weights(path: Union[str, Path], expect_sha256: Optional[str] = None,
                 what: str = "weights file") -> Tuple[Dict[str, Any], Dict[str, Tensor], str]:
    """Read a file written by :func:`save_weights` and verify its SHA-256 (see :func:`parse_weights`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    return parse_weights(path.read_bytes(), str(path), expect_sha256, what)


def parse_weights(raw: bytes, where: str, expect_sha256: Optional[str] = None,
                  what: str = "weights file") -> Tuple[Dict[str, Any], Dict[str, Tensor], str]:
    """Parse the bytes of a weights file and verify its SHA-256.

    Args:
        raw: the file's bytes.
        where: the file (or source) named in errors.
        expect_sha256: the hash recorded elsewhere (results.json); a different one is an error.
        what: the kind of file, used in errors ("checkpoint", "packed model").

    Returns:
        (header with nested tensors restored, top-level tensors, content SHA-256).

    Raises:
        ValueError: one line naming ``where``: empty, truncated, damaged, or a hash that
            does not match.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    if raw[:4] == _ZIP_MAGIC:
        raise ValueError(f"{where}: a torch.save archive, not a safetensors {what}")
    head, _ = _read_header(raw, where)
    meta = head.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get("sturdynet"), str):
        raise ValueError(f"{where}: not a sturdynet {what} (a safetensors file without sturdynet's header)")
    try:
        tensors = st_load(raw)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError, MemoryError) as e:
        raise ValueError(f"{where}: damaged {what} ({type(e).__name__}: {first_line(e, 120)})") from None
    digest = content_sha256(tensors, meta["sturdynet"])
    if meta.get("sha256") != digest:
        raise ValueError(f"{where}: {what} fails its SHA-256 check (damaged or modified)")
    if expect_sha256 is not None and expect_sha256 != digest:
        raise ValueError(f"{where}: {what} is not the one recorded (SHA-256 {digest[:12]}..., "
                         f"expected {expect_sha256[:12]}...)")
    try:
        plain = json.loads(meta["sturdynet"])
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"{where}: damaged {what} (sturdynet header is not valid JSON)") from None
    if not isinstance(plain, dict):
        raise ValueError(f"{where}: damaged {what} (sturdynet header is not a mapping)")
    header = _join_tensors(plain, tensors, where)
    top = {k: v for k, v in tensors.items() if not k.startswith(_TENSOR_PREFIX)}
    return header, top, digest


def load_legacy(path: Union[str, Path, bytes], what: str = "checkpoint", where: str = "") -> Any:
    """A ``torch.save`` file of plain data, read with ``weights_only=True`` (no code runs).

    Torch's own error text is never passed on (it can carry terminal colour codes and the
    advice to load with ``weights_only=False``, which would run the file's code).
    """
    import io

    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    path = where or source
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except MemoryError:
        raise ValueError(f"{path}: {what} too large to load") from None
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        kind = "refused by weights_only=True: it holds objects other than tensors and plain data" \
            if "weights_only" in str(e) or "Unsupported global" in str(e) else "damaged or not a torch.save file"
        raise ValueError(f"{path}: not a loadable {what} ({kind})") from None


def file_sha256(path: Union[str, Path]) -> str:
    """SHA-256 of a file's bytes (for files without an embedded hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
