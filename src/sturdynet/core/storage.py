"""What a model really costs to store: bits per weight, sparse encoding, totals.

Every tensor of the deployed model counts: parameters and buffers, except pruning
masks (counted as the sparse encoding's bitmask instead) and batch-norm's
``num_batches_tracked`` (a training counter). A layer tells its bit width through
``storage_bits(param)`` (quantized and binary layers do; float tensors count their
dtype's width). A masked tensor is stored sparse when that is cheaper — its non-zeros
at their bit width plus a bitmask of one bit per position — and always when its codes
cannot represent the pruned zeros (binary weights).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from .masks import SUFFIX, mask_sparsity


def _dtype_bits(t: torch.Tensor) -> int:
    return torch.finfo(t.dtype).bits if t.is_floating_point() else torch.iinfo(t.dtype).bits if t.dtype != torch.bool else 1


def stored_sparse(module: nn.Module, name: str, per: int) -> bool:
    """Whether ``module.<name>`` (``per`` bits per element) is stored sparse: bitmask + kept entries.

    True when it has a pruning mask and that is cheaper than dense, or when the mask prunes
    entries its quantizer's codes cannot hold (``zero_code = False``, e.g. binary ``+-alpha``:
    stored dense, the mask could not be rebuilt as ``tensor != 0``).
    """
    mask = module._buffers.get(name + SUFFIX)
    if mask is None:
        return False
    n, nnz = mask.numel(), int(mask.sum())
    if nnz * per + n < n * per:
        return True
    finder = getattr(module, "quantizer_for", None)
    q = finder(name) if callable(finder) else None
    return nnz < n and q is not None and not getattr(q, "zero_code", True)


def tensor_bits(module: nn.Module, name: str, t: torch.Tensor) -> int:
    """Bits needed to store ``module.<name>`` as deployed (dense, or sparse: see :func:`stored_sparse`)."""
    hook = getattr(module, "storage_bits", None)
    per = hook(name) if callable(hook) else None
    per = _dtype_bits(t) if per is None else per
    if stored_sparse(module, name, per):
        return int(module._buffers[name + SUFFIX].sum()) * per + t.numel()  # kept entries + bitmask
    return t.numel() * per


def compression_facts(model: nn.Module) -> Dict[str, float]:
    """Size in bytes (deployed and float32-dense), sparsity and weight bit width."""
    bits = 0
    dense_bits = 0
    params = 0
    weight_bits = []
    for m in model.modules():
        hook = getattr(m, "storage_bits", None)
        tensors = list(m._parameters.items()) + list(m._buffers.items())
        for name, t in tensors:
            if t is None or name.endswith(SUFFIX) or name == "num_batches_tracked":
                continue
            bits += tensor_bits(m, name, t)
            dense_bits += t.numel() * 32
            if name in m._parameters:
                params += t.numel()
            if name == "weight" and isinstance(m, (nn.Conv2d, nn.Linear)):
                per = hook(name) if callable(hook) else None
                weight_bits.append(per if per is not None else _dtype_bits(t))
    size = (bits + 7) // 8
    dense = (dense_bits + 7) // 8
    return {
        "size_bytes": int(size),
        "dense_size_bytes": int(dense),
        "compression_ratio": dense / max(1, size),
        "sparsity": mask_sparsity(model),
        "bits": int(min(weight_bits)) if weight_bits else 32,
        "params": int(params),
    }
