"""Packed export: a file whose size is the model's real storage cost.

Container (version 2): the 8 bytes ``STURDYPK``, one version byte, the length of the
header as a 4-byte little-endian integer, the header, then the payload: every tensor's
bytes back to back. The header is one UTF-8 JSON object, zlib-compressed with a fixed
preset dictionary of the usual key names (:data:`ZDICT`): ``arch`` (model name and
parameters, data facts, compression steps: :func:`sturdynet.run.checkpoint.arch_of`),
``float_dtype``, ``sparse`` (``[index, nnz]`` of the tensors stored sparse) and, only when
the tensor list cannot be rebuilt from ``arch`` alone (structures decided in training,
factory models), ``tensors``: one ``[name, kind, shape, spec]`` per tensor in payload order
(``spec``: bits of ``packed`` codes, dtype of ``int`` tensors, 0 otherwise). Otherwise the
names, shapes and storage kinds come from the rebuilt architecture (each layer's
``storage_bits``), so they are not stored at all; byte ranges are never stored (they follow
from shapes, bits and ``nnz``). ``sha256`` is the SHA-256 of the header's other keys
(canonical JSON) and the payload (about 35 more bytes in the compressed header), verified on every load, so one flipped byte anywhere is
an error naming the file (:func:`content_sha256`). Other keys may be added (the model spec);
readers ignore keys they do not know. The file is the payload plus about 150-300 bytes,
read as data only, never unpickled. Version-1 files (a ``torch.save`` of the same facts
with explicit byte ranges) still load.

What each tensor costs in the payload (the same rule as
:func:`sturdynet.core.storage.compression_facts`, so ``size_bytes`` matches the payload to
within byte rounding per tensor):

- a tensor stored by a quantizer (its layer's ``quantizer_for(name)`` with
  ``storage_bits(name)`` bits): its integer codes, bit-packed (``k`` bits each: k-bit
  uniform and fixed point ``k``, ternary 2, binary 1); the quantizer's scales are
  its own parameters/buffers and are stored as float tensors;
- float tensors: float32 (``float16`` on request; the loaded model then equals the
  float16-rounded model, not the original, bit for bit);
- bool tensors: 1 bit each; integer tensors: their raw bytes;
- a tensor with a pruning mask (``<name>_mask``) is stored sparse when that is
  cheaper, or when its codes cannot represent 0 (binary; :func:`sturdynet.core.storage.stored_sparse`):
  the mask as a bitmask plus only the kept entries (codes or floats); masks of
  densely stored tensors are not stored (on load they are rebuilt as ``tensor != 0``);
- batch-norm's ``num_batches_tracked`` (a training counter) is not stored.

Loading rebuilds the structure from ``arch`` (``build_model`` +
``run_steps(structure_only=True)`` with the stored shapes, so structures decided in
training — RA-BNN's grown widths, global structured pruning's channel counts — come
back as a checkpoint's do), fills float tensors first, then decodes the packed
ones with their (now loaded) quantizers, whose export protocol
(:class:`sturdynet.quant.base.Quantizer`) guarantees that the deployed values — hence
the outputs — equal the exported model's bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..core.atomic import write_bytes_atomic
from ..core.masks import SUFFIX
from ..core.names import first_line
from ..core.weights import load_legacy
from ..core.storage import stored_sparse
from .bits import pack_bits, packed_nbytes, unpack_bits

FORMAT = "sturdynet-packed"
VERSION = 2
MAGIC = b"STURDYPK"
_KINDS = {"packed": "p", "bool": "b", "float": "f", "int": "i"}
# Preset dictionary of the header's compression (part of format version 2: never change it).
ZDICT = (b'"in_channels":"num_classes":"input_size":"mean":"std":"data_spec":null,"shortcut":"A"'
         b'"width":"depth":"act_bits":null,"per_channel":true,"mode":"ptq","calibration":"minmax",'
         b'"percentile":99.99,"calib_samples":256,"quantize_first":false,"quantize_last":false,'
         b'"threshold":"estimator":"clipped_ste","activations":"sparsity":"quant.uniform","quant.ternary",'
         b'"quant.fixed_point","binarize","prune.global_magnitude","prune.layerwise_magnitude",'
         b'"resnet20","small_cnn","mlp","vgg_small","resnet18","bits":8,"method":"steps":[{"method":'
         b'"float_dtype":"float32","sparse":[],"tensors":[["weight","bias","running_mean","running_var",'
         b'"arch":{"model":{"name":"data":{')
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def stored_tensors(model: nn.Module) -> Iterator[Tuple[str, nn.Module, str, Tensor]]:
    """(full name, owning module, attribute, tensor) for every tensor an export stores."""
    seen = set()
    for mname, m in model.named_modules():
        for name, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is None or name.endswith(SUFFIX) or name == "num_batches_tracked" or id(t) in seen:
                continue
            seen.add(id(t))
            yield (f"{mname}.{name}" if mname else name), m, name, t


def _quantizer(module: nn.Module, name: str) -> Tuple[Optional[nn.Module], Optional[int]]:
    hook = getattr(module, "storage_bits", None)
    bits = hook(name) if callable(hook) else None
    if bits is None:
        return None, None
    finder = getattr(module, "quantizer_for", None)
    q = finder(name) if callable(finder) else (getattr(module, "weight_quantizer", None) if name == "weight" else None)
    if q is None or not callable(getattr(q, "encode", None)):
        raise ValueError(f"{type(module).__name__}.{name} reports {bits} storage bits but has no quantizer "
                         "with encode/decode (see sturdynet.quant.base.Quantizer)")
    return q, int(bits)


def _raw(t: Tensor) -> Tensor:
    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)


def export_model(model: nn.Module, path: Union[str, Path], arch: Dict[str, Any],
                 float_dtype: str = "float32") -> Dict[str, Any]:
    """Write ``model`` as a packed file.

    Args:
        model: a (quantized, pruned, binary or float) sturdynet model.
        path: output file (written atomically).
        arch: architecture description (:func:`sturdynet.run.checkpoint.arch_of`).
        float_dtype: ``"float32"`` (bit-exact) or ``"float16"``.

    Returns:
        ``{"file_bytes", "payload_bytes", "tensors", "packed", "sparse"}``.
    """
    if float_dtype not in _FLOAT_DTYPES:
        raise ValueError(f"float_dtype must be float32 or float16, got {float_dtype!r}")
    fdt = _FLOAT_DTYPES[float_dtype]
    chunks: List[Tensor] = []
    entries: List[Dict[str, Any]] = []
    offset = 0

    def put(data: Tensor) -> Tuple[int, int]:
        nonlocal offset
        chunks.append(data)
        start, offset = offset, offset + data.numel()
        return start, data.numel()

    n_packed = n_sparse = 0
    with torch.no_grad():
        for key, m, name, t in stored_tensors(model):
            e: Dict[str, Any] = {"name": key, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
            q, bits = _quantizer(m, name)
            mask = m._buffers.get(name + SUFFIX)
            if q is not None:
                e.update(kind="packed", bits=bits)
                values = q.encode(t).reshape(-1)
                per = bits
            elif t.dtype == torch.bool:
                e.update(kind="bool", bits=1)
                values, per = t.reshape(-1).long(), 1
            elif t.is_floating_point():
                e.update(kind="float", store=float_dtype)
                values, per = t.reshape(-1), torch.finfo(fdt).bits
            else:
                e.update(kind="int")
                values, per = t.reshape(-1), torch.iinfo(t.dtype).bits
            if stored_sparse(m, name, per):
                keep = mask.reshape(-1).to(values.device)
                e["sparse"] = True
                e["nnz"] = int(keep.sum())
                e["mask"] = put(pack_bits(keep.long(), 1))
                values = values[keep]
                n_sparse += 1
            if e["kind"] in ("packed", "bool"):
                e["data"] = put(pack_bits(values, e["bits"]))
                n_packed += e["kind"] == "packed"
            elif e["kind"] == "float":
                e["data"] = put(_raw(values.to(fdt)))
            else:
                e["data"] = put(_raw(values))
            entries.append(e)
    payload = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8)
    rows = [_compact(e) for e in entries]
    header: Dict[str, Any] = {"arch": arch, "float_dtype": float_dtype,
                              "sparse": [[i, e["nnz"]] for i, e in enumerate(entries) if e.get("sparse")]}
    if _derived_rows(arch) != [r[:4] for r in rows]:
        header["tensors"] = [r[:4] for r in rows]
    body = payload.numpy().tobytes()
    header["sha256"] = content_sha256(header, body)
    path = write_bytes_atomic(path, b"".join([MAGIC, bytes([VERSION]), *_header_bytes(header), body]))
    return {"file_bytes": path.stat().st_size, "payload_bytes": int(payload.numel()), "tensors": len(entries),
            "packed": n_packed, "sparse": n_sparse, "names_stored": "tensors" in header, "sha256": header["sha256"]}


def content_sha256(header: Dict[str, Any], body: bytes) -> str:
    """SHA-256 of a packed file's content: its header (without ``sha256``, canonical JSON) and payload."""
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True,
                                  separators=(",", ":")).encode())
    h.update(body)
    return h.hexdigest()  # hex: compresses to about 32 bytes in the zlib header (base64 would not)


def _header_bytes(header: Dict[str, Any]) -> Tuple[bytes, bytes]:
    c = zlib.compressobj(9, zdict=ZDICT)
    head = c.compress(json.dumps(header, separators=(",", ":")).encode()) + c.flush()
    return struct.pack("<I", len(head)), head


def _layout(model: nn.Module) -> List[list]:
    """``[name, kind, shape, spec]`` of every stored tensor of ``model``, in export order."""
    rows = []
    for key, m, name, t in stored_tensors(model):
        q, bits = _quantizer(m, name)
        if q is not None:
            rows.append([key, "p", list(t.shape), bits])
        elif t.dtype == torch.bool:
            rows.append([key, "b", list(t.shape), 0])
        elif t.is_floating_point():
            rows.append([key, "f", list(t.shape), 0])
        else:
            rows.append([key, "i", list(t.shape), str(t.dtype).replace("torch.", "")])
    return rows


def _derived_rows(arch: Dict[str, Any]) -> Optional[List[list]]:
    """The tensor list rebuilt from ``arch`` alone (None when it cannot be built so)."""
    from ..models.arch import build_from_arch

    try:
        return _layout(build_from_arch(arch, None))
    except Exception:  # noqa: BLE001 - not rebuildable without the shapes: store the names
        return None


def _compact(e: Dict[str, Any]) -> list:
    spec = e["bits"] if e["kind"] == "packed" else (e["dtype"] if e["kind"] == "int" else 0)
    row = [e["name"], _KINDS[e["kind"]], e["shape"], spec]
    return row + [e["nnz"]] if e.get("sparse") else row


def _expand(rows: List[list], float_dtype: str, path: Path) -> List[Dict[str, Any]]:
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
        rows = _derived_rows(header["arch"])
        if rows is None:
            raise ValueError(f"{path}: the architecture in the header cannot be rebuilt")
    rows = [list(r) for r in rows]
    for i, nnz in header.get("sparse", []):
        rows[i] = rows[i][:4] + [nnz]
    blob = {"format": FORMAT, "version": VERSION, **{k: v for k, v in header.items() if k not in ("tensors", "sparse")}}
    blob["entries"] = _expand(rows, header.get("float_dtype", "float32"), path)
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


def _slice(payload: Tensor, rng: List[int]) -> Tensor:
    start, n = rng
    return payload[start:start + n]


def _shapes(entries: List[Dict[str, Any]]) -> Dict[str, Tensor]:
    """A shape-only state_dict of the stored tensors (``meta`` tensors: no memory, no data).

    Methods whose structure only the weights tell (``prepare_for_state``: widths grown by
    RA-BNN, channels kept by global structured pruning) read it from the shapes, exactly
    as they do from a checkpoint's state_dict.
    """
    return {e["name"]: torch.empty(tuple(e["shape"]), device="meta") for e in entries}


def load_packed(path: Union[str, Path], trusted_factory: Optional[str] = "") -> Tuple[nn.Module, Dict[str, Any]]:
    """Load a packed file; returns (model in eval mode, blob). A model built by a factory
    is rebuilt only when ``trusted_factory`` names it (see ``models.arch.build_from_arch``).

    Raises:
        ValueError: missing or foreign file, or tensors that do not match the rebuilt
            architecture.
    """
    from ..models.arch import build_from_arch

    blob = read_packed(path)
    try:
        return _build(Path(path), blob, build_from_arch, trusted_factory)
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: damaged packed model ({first_line(e, 300)})") from None
    except MemoryError:
        raise ValueError(f"{path}: its architecture is too large to build") from None
    except Exception as e:  # noqa: BLE001 - a structurally wrong file is a bad file, whatever breaks
        raise ValueError(f"{path}: does not match its architecture ({type(e).__name__}: {first_line(e, 300)})") from None


def _build(path: Path, blob: Dict[str, Any], build_from_arch: Any,
           trusted_factory: Optional[str]) -> Tuple[nn.Module, Dict[str, Any]]:
    model = build_from_arch(blob["arch"], _shapes(blob["entries"]), trusted_factory=trusted_factory)
    targets = {key: (m, name, t) for key, m, name, t in stored_tensors(model)}
    names = [e["name"] for e in blob["entries"]]
    missing, extra = sorted(set(targets) - set(names)), sorted(set(names) - set(targets))
    if missing or extra:
        raise ValueError(f"{path}: tensors do not match the architecture (missing {missing[:5]}, "
                         f"unexpected {extra[:5]})")
    payload = blob["payload"]
    entries = sorted(blob["entries"], key=lambda e: e["kind"] == "packed")  # quantizer state first
    with torch.no_grad():
        for e in entries:
            m, name, t = targets[e["name"]]
            shape, n = tuple(e["shape"]), 1
            for s in shape:
                n *= s
            if tuple(t.shape) != shape:
                raise ValueError(f"{path}: {e['name']} has shape {shape}, the architecture wants {tuple(t.shape)}")
            keep = None
            if e.get("sparse"):
                keep = unpack_bits(_slice(payload, e["mask"]), 1, n).bool()
            count = e["nnz"] if keep is not None else n
            data = _slice(payload, e["data"])
            if e["kind"] == "packed":
                q, bits = _quantizer(m, name)
                codes = unpack_bits(data, e["bits"], count).to(t.device)
                if keep is not None:
                    # Pruned positions take code 0 (zeroed by the mask below); not q.encode(zeros),
                    # which may refresh the quantizer's scales from its input (binary alpha).
                    full = torch.zeros(n, dtype=codes.dtype, device=t.device)
                    full[keep.to(t.device)] = codes
                    codes = full
                value = q.decode(codes.view(shape)).to(t.dtype)
            elif e["kind"] == "bool":
                value = unpack_bits(data, 1, count).bool()
            elif e["kind"] == "float":
                value = data.clone().view(_FLOAT_DTYPES[e["store"]]).to(t.dtype)
            else:
                value = data.clone().view(getattr(torch, e["dtype"]))
            if keep is not None and e["kind"] != "packed":
                full = torch.zeros(n, dtype=value.dtype)
                full[keep] = value
                value = full
            value = value.reshape(shape).to(t.device)
            mask_name = name + SUFFIX
            if keep is not None:
                mask = keep.view(shape).to(t.device)
                value = value * mask if value.dtype != torch.bool else value & mask
                m._buffers[mask_name] = mask
            elif mask_name in m._buffers:
                m._buffers[mask_name] = (value != 0)
            t.copy_(value)
    model.eval()
    return model, blob
