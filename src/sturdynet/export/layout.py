"""Which tensors a packed file stores, and the compact ``[name, kind, shape, spec]`` rows that
describe them (see :mod:`sturdynet.export.packed` for the format)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.masks import SUFFIX

_KINDS = {"packed": "p", "bool": "b", "float": "f", "int": "i"}
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


def quantizer_of(module: nn.Module, name: str) -> Tuple[Optional[nn.Module], Optional[int]]:
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


def layout(model: nn.Module) -> List[list]:
    """``[name, kind, shape, spec]`` of every stored tensor of ``model``, in export order."""
    rows = []
    for key, m, name, t in stored_tensors(model):
        q, bits = quantizer_of(m, name)
        if q is not None:
            rows.append([key, "p", list(t.shape), bits])
        elif t.dtype == torch.bool:
            rows.append([key, "b", list(t.shape), 0])
        elif t.is_floating_point():
            rows.append([key, "f", list(t.shape), 0])
        else:
            rows.append([key, "i", list(t.shape), str(t.dtype).replace("torch.", "")])
    return rows


def derived_rows(arch: Dict[str, Any]) -> Optional[List[list]]:
    """The tensor list rebuilt from ``arch`` alone (None when it cannot be built so)."""
    from ..models.arch import build_from_arch

    try:
        return layout(build_from_arch(arch, None))
    except Exception:  # noqa: BLE001 - not rebuildable without the shapes: store the names
        return None


def compact_row(e: Dict[str, Any]) -> list:
    spec = e["bits"] if e["kind"] == "packed" else (e["dtype"] if e["kind"] == "int" else 0)
    row = [e["name"], _KINDS[e["kind"]], e["shape"], spec]
    return row + [e["nnz"]] if e.get("sparse") else row
