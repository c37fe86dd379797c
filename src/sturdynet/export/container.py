"""The packed file's container: magic, version, compressed JSON header with a SHA-256 of the
content, payload; reading verifies all of it (format: :mod:`sturdynet.export.packed`)."""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..core.names import first_line
from ..core.weights import load_legacy
from .bits import packed_nbytes
from .layout import _FLOAT_DTYPES, _KINDS, derived_rows

FORMAT = "sturdynet-packed"
VERSION = 2
MAGIC = b"STURDYPK"
# Preset dictionary of the header's compression (part of format version 2: never change it).
ZDICT = (b'"in_channels":"num_classes":"input_size":"mean":"std":"data_spec":null,"shortcut":"A"'
         b'"width":"depth":"act_bits":null,"per_channel":true,"mode":"ptq","calibration":"minmax",'
         b'"percentile":99.99,"calib_samples":256,"quantize_first":false,"quantize_last":false,'
         b'"threshold":"estimator":"clipped_ste","activations":"sparsity":"quant.uniform","quant.ternary",'
         b'"quant.fixed_point","binarize","prune.global_magnitude","prune.layerwise_magnitude",'
         b'"resnet20","small_cnn","mlp","vgg_small","resnet18","bits":8,"method":"steps":[{"method":'
         b'"float_dtype":"float32","sparse":[],"tensors":[["weight","bias","running_mean","running_var",'
         b'"arch":{"model":{"name":"data":{')



def content_sha256(header: Dict[str, Any], body: bytes) -> str:
    """SHA-256 of a packed file's content: its header (without ``sha256``, canonical JSON) and payload."""
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True,
                                  separators=(",", ":")).encode())
    h.update(body)
    return h.hexdigest()  # hex: compresses to about 32 bytes in the zlib header (base64 would not)


def header_bytes(header: Dict[str, Any]) -> Tuple[bytes, bytes]:
    c = zlib.compressobj(9, zdict=ZDICT)
    head = c.compress(json.dumps(header, separators=(",", ":")).encode()) + c.flush()
    return struct.pack("<I", len(head)), head


def expand_rows(rows: List[list], float_dtype: str, path: Path) -> List[Dict[str, Any]]:
    """Version-2 rows as the version-1 entries (explicit byte ranges) the loader reads."""
    kinds = {v: k for k, v in _KINDS.items()}
    fbytes = torch.finfo(_FLOAT_DTYPES[float_dtype]).bits // 8
    entries, offset = [], 0

    def take(n: int) -> List[int]:
        nonlocal offset
        start, offset = offset, offset + n
        return [start, n]

    for row in rows:
        if not isinstance(row, list) or len(row) not in (4, 5) or row[1] not in kinds:
            raise ValueError(f"{path}: malformed tensor entry {str(row)[:80]}")
        name, kind, shape, spec = row[0], kinds[row[1]], [int(s) for s in row[2]], row[3]
        n = 1
        for s in shape:
            n *= s
        e: Dict[str, Any] = {"name": name, "kind": kind, "shape": shape}
        count = n
        if len(row) == 5:
            e.update(sparse=True, nnz=int(row[4]), mask=take(packed_nbytes(n, 1)))
            count = e["nnz"]
        if kind == "packed":
            e["bits"] = int(spec)
            e["data"] = take(packed_nbytes(count, e["bits"]))
        elif kind == "bool":
            e["bits"] = 1
            e["data"] = take(packed_nbytes(count, 1))
        elif kind == "float":
            e["store"] = float_dtype
            e["data"] = take(count * fbytes)
        else:
            e["dtype"] = str(spec)
            e["data"] = take(count * torch.iinfo(getattr(torch, e["dtype"])).bits // 8)
        entries.append(e)
    return entries


def read_packed(path: Union[str, Path], expect_sha256: Optional[str] = None) -> Dict[str, Any]:
    """The contents of a packed file: ``format``, ``version``, ``arch``, ``float_dtype``,
    ``entries`` (per tensor: name, kind, shape, bits / dtype, byte ranges), ``payload`` (a
    uint8 tensor), ``sha256`` (verified; None for version 1) and any other header keys.
    Reads version 2 and version 1 files as data only.

    Raises:
        ValueError: one line naming the file: missing, foreign, truncated, damaged (its
            SHA-256 differs), newer, or not the one recorded (``expect_sha256``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"packed model not found: {path}")
    try:
        blob = _read_packed(path)
    except ValueError as e:
        raise ValueError(first_line(e, 400) if str(path) in str(e) else f"{path}: {first_line(e, 300)}") from None
    except MemoryError:
        raise ValueError(f"{path}: packed model too large to load") from None
    except Exception as e:  # noqa: BLE001 - a crafted header is a bad file, whatever breaks
        raise ValueError(f"{path}: damaged packed model ({type(e).__name__}: {first_line(e, 200)})") from None
    if expect_sha256 is not None and blob.get("sha256") != expect_sha256:
        raise ValueError(f"{path}: packed model is not the one recorded (SHA-256 differs)")
    _check_blob(path, blob)
    return blob


def _read_packed(path: Path) -> Dict[str, Any]:
    raw = path.read_bytes()
    if raw[:len(MAGIC)] != MAGIC:
        return _read_v1(path)
    if len(raw) < len(MAGIC) + 5:
        raise ValueError(f"{path}: truncated packed model")
    version = raw[len(MAGIC)]
    if version != VERSION:
        raise ValueError(f"{path}: packed format version {version} is not supported (want {VERSION})")
    (hlen,) = struct.unpack("<I", raw[len(MAGIC) + 1:len(MAGIC) + 5])
    start = len(MAGIC) + 5
    try:
        d = zlib.decompressobj(zdict=ZDICT)
        header = json.loads((d.decompress(raw[start:start + hlen]) + d.flush()).decode())
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"{path}: unreadable packed model header") from None
    if not isinstance(header, dict) or "arch" not in header:
        raise ValueError(f"{path}: not a sturdynet packed model")
    digest = header.get("sha256")
    if not isinstance(digest, str):
        raise ValueError(f"{path}: packed model has no SHA-256 (damaged, or written before checksums)")

    rows = header.get("tensors")
    if rows is None:
        rows = derived_rows(header["arch"])
        if rows is None:
            raise ValueError(f"{path}: the architecture in the header cannot be rebuilt")
    rows = [list(r) for r in rows]
    for i, nnz in header.get("sparse", []):
        rows[i] = rows[i][:4] + [nnz]
    blob = {"format": FORMAT, "version": VERSION, **{k: v for k, v in header.items() if k not in ("tensors", "sparse")}}
    blob["entries"] = expand_rows(rows, header.get("float_dtype", "float32"), path)
    body = raw[start + hlen:]
    need = sum(e["data"][1] + (e["mask"][1] if "mask" in e else 0) for e in blob["entries"])
    if len(body) != need:
        raise ValueError(f"{path}: payload holds {len(body)} bytes, the header describes {need}")
    if content_sha256(header, body) != digest:
        raise ValueError(f"{path}: packed model fails its SHA-256 check (damaged or modified)")
    blob["payload"] = torch.frombuffer(bytearray(body), dtype=torch.uint8) if body else torch.zeros(0, dtype=torch.uint8)
    return blob


def _read_v1(path: Path) -> Dict[str, Any]:
    blob = load_legacy(path, "packed model")  # weights_only=True; torch's advice is never shown
    if isinstance(blob, dict):
        blob["sha256"] = None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sturdynet packed model")
    if blob.get("version") != 1:
        raise ValueError(f"{path}: packed format version {blob.get('version')} is not supported (want {VERSION})")
    return blob


_KIND_NAMES = ("packed", "bool", "float", "int")


def _check_blob(path: Path, blob: Dict[str, Any]) -> None:
    """Types and byte ranges of the entries, so a damaged or crafted file is a one-line error."""
    payload, entries = blob.get("payload"), blob.get("entries")
    if not isinstance(payload, Tensor) or payload.dtype != torch.uint8 or payload.dim() != 1:
        raise ValueError(f"{path}: damaged packed model (no uint8 payload)")
    if not isinstance(blob.get("arch"), dict) or not isinstance(entries, list) or \
            blob.get("float_dtype") not in _FLOAT_DTYPES:
        raise ValueError(f"{path}: damaged packed model (header lacks arch, entries or float_dtype)")
    size = payload.numel()
    for i, e in enumerate(entries):
        ok = isinstance(e, dict) and isinstance(e.get("name"), str) and e.get("kind") in _KIND_NAMES and \
            isinstance(e.get("shape"), list) and all(isinstance(d, int) and 0 <= d < 2 ** 31 for d in e["shape"])
        ranges = [e.get("data")] + ([e.get("mask")] if e.get("sparse") else []) if ok else []
        ok = ok and all(isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and v >= 0 for v in r)
                        and r[0] + r[1] <= size for r in ranges)
        if ok and e["kind"] in ("packed", "bool"):
            ok = isinstance(e.get("bits"), int) and 1 <= e["bits"] <= 32
        if ok and e["kind"] == "float":
            ok = e.get("store") in _FLOAT_DTYPES
        if ok and e["kind"] == "int":
            ok = e.get("dtype") in ("int8", "int16", "int32", "int64", "uint8")
        if ok and e.get("sparse"):
            ok = isinstance(e.get("nnz"), int) and e["nnz"] >= 0
        if not ok:
            name = e.get("name") if isinstance(e, dict) else None
            raise ValueError(f"{path}: damaged packed model (entry {i} {str(name)[:60]!r} is malformed)")
