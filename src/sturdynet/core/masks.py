"""Pruning masks as first-class state of the model.

A mask is a boolean buffer named ``<param>_mask`` on the module that owns ``<param>``
(for example ``conv.weight_mask``). Because it is a buffer it travels with
``state_dict`` (checkpoints keep it), and because the training loop calls
:func:`apply_masks` after every optimizer step, pruned weights stay exactly zero
through fine-tuning, momentum and weight decay included.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import torch
from torch import Tensor, nn

SUFFIX = "_mask"


def prunable(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every Conv and Linear layer, in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def attach_mask(module: nn.Module, param: str, mask: Tensor) -> None:
    """Attach (or replace) the mask of ``module.<param>`` and zero the pruned entries."""
    p = getattr(module, param)
    if mask.shape != p.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {param} {tuple(p.shape)}")
    mask = mask.to(device=p.device, dtype=torch.bool).contiguous()  # an expanded view cannot be loaded into
    name = param + SUFFIX
    if name in module._buffers:
        module._buffers[name] = mask
    else:
        module.register_buffer(name, mask)
    with torch.no_grad():
        p.mul_(mask)


def iter_masks(model: nn.Module) -> Iterator[Tuple[str, nn.Module, str, Tensor]]:
    """Yield (module name, module, param name, mask) for every mask in the model."""
    for mname, m in model.named_modules():
        for bname, buf in m._buffers.items():
            if buf is not None and bname.endswith(SUFFIX) and hasattr(m, bname[: -len(SUFFIX)]):
                yield mname, m, bname[: -len(SUFFIX)], buf


def get_masks(model: nn.Module) -> Dict[str, Tensor]:
    """{"<module>.<param>": mask} for every masked parameter."""
    return {f"{mn}.{p}" if mn else p: mask for mn, _, p, mask in iter_masks(model)}


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Zero every masked entry (called by the training loop after each optimizer step)."""
    for _, m, p, mask in iter_masks(model):
        getattr(m, p).mul_(mask)


def remove_masks(model: nn.Module) -> None:
    """Drop all masks (the zeros stay in the weights)."""
    for _, m, p, _ in list(iter_masks(model)):
        del m._buffers[p + SUFFIX]


def mask_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over the prunable weights (conv and linear); masked or not."""
    total, zeros = 0, 0
    masks = {id(m): m for _, m, p, _ in iter_masks(model) if p == "weight"}
    for _, m in prunable(model):
        n = m.weight.numel()
        total += n
        if id(m) in masks:
            zeros += n - int(m.weight_mask.sum())
    return zeros / max(1, total)
