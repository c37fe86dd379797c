"""Packed export: a file whose size is the model's real storage cost.

Container (version 2): the 8 bytes ``STURDYPK``, one version byte, the length of the
header as a 4-byte little-endian integer, the header, then the payload: every tensor's
bytes back to back. The header is one UTF-8 JSON object, zlib-compressed with a fixed
preset dictionary of the usual key names (:data:`~sturdynet.export.container.ZDICT`): ``arch`` (model name and
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

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..core.atomic import write_bytes_atomic
from ..core.masks import SUFFIX
from ..core.names import first_line
from ..core.storage import stored_sparse
from .bits import pack_bits, unpack_bits
from .container import FORMAT, MAGIC, VERSION, ZDICT, content_sha256, header_bytes, read_packed
from .layout import _FLOAT_DTYPES, compact_row, derived_rows, quantizer_of, stored_tensors

__all__ = ["FORMAT", "MAGIC", "VERSION", "ZDICT", "content_sha256", "export_model", "load_packed", "read_packed",
           "stored_tensors"]


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
            q, bits = quantizer_of(m, name)
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
    rows = [compact_row(e) for e in entries]
    header: Dict[str, Any] = {"arch": arch, "float_dtype": float_dtype,
                              "sparse": [[i, e["nnz"]] for i, e in enumerate(entries) if e.get("sparse")]}
    if derived_rows(arch) != [r[:4] for r in rows]:
        header["tensors"] = [r[:4] for r in rows]
    body = payload.numpy().tobytes()
    header["sha256"] = content_sha256(header, body)
    path = write_bytes_atomic(path, b"".join([MAGIC, bytes([VERSION]), *header_bytes(header), body]))
    return {"file_bytes": path.stat().st_size, "payload_bytes": int(payload.numel()), "tensors": len(entries),
            "packed": n_packed, "sparse": n_sparse, "names_stored": "tensors" in header, "sha256": header["sha256"]}


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
                q, bits = quantizer_of(m, name)
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
