"""Packed export: a file whose size is the model's real storage cost.

Container: ``torch.save`` of a plain dict — ``format``, ``version``, ``arch`` (model name
and parameters, data facts, compression steps: :func:`sturdynet.run.checkpoint.arch_of`),
``entries`` (one small dict per tensor: name, kind, shape, bit width, byte range) and
``payload``, **one** uint8 tensor holding every tensor's bytes back to back. It loads
with ``torch.load(..., weights_only=True)`` (data, never code), and because the payload
is a single tensor the file is the payload plus a few kilobytes of index and zip
framing, instead of per-tensor records.

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
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..core.atomic import torch_save_atomic
from ..core.masks import SUFFIX
from ..core.storage import stored_sparse
from .bits import pack_bits, packed_nbytes, unpack_bits

FORMAT = "sturdynet-packed"
VERSION = 1
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
    blob = {"format": FORMAT, "version": VERSION, "arch": arch, "float_dtype": float_dtype,
            "entries": entries, "payload": payload}
    path = torch_save_atomic(path, blob)
    return {"file_bytes": path.stat().st_size, "payload_bytes": int(payload.numel()), "tensors": len(entries),
            "packed": n_packed, "sparse": n_sparse}


def read_packed(path: Union[str, Path]) -> Dict[str, Any]:
    """The raw blob of a packed file (validated header), loaded as data only."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"packed model not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ValueError(f"{path}: not a loadable packed model ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sturdynet packed model")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path}: packed format version {blob.get('version')} is not supported (want {VERSION})")
    return blob


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
