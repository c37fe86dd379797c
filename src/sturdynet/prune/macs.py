"""Multiply-accumulate (MAC) counter for conv and linear layers, by forward hooks.

One forward pass on a single example records, per layer, the dense MACs

* conv: ``out_elements * (in_channels / groups) * prod(kernel)`` (per example),
* linear: ``out_elements * in_features``,

and the non-zero MACs, where only non-zero weights count (a zero weight skips its
multiply for every output position: ``out_positions * nnz(weight)``). Element-wise
layers (batch norm, activations, pooling) are not counted: by convention the FLOP/MAC
figures of the pruning literature cover conv and linear layers only.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@torch.no_grad()
def count_macs(model: nn.Module, example: Union[Tensor, Sequence[int]],
               device: Optional[torch.device] = None) -> Dict[str, object]:
    """MACs and parameters of ``model`` for one input example.

    Args:
        model: any module; it is run in eval mode and restored afterwards.
        example: an input tensor with a batch dimension, or its shape without one
            (e.g. ``(3, 32, 32)``); a batch of B counts B examples' MACs divided by B.
        device: where to build a zero example (defaults to the model's device).

    Returns:
        ``{"macs", "nonzero_macs", "params", "nonzero_params", "layers": {name: {...}}}``,
        MACs per example.
    """
    if not isinstance(example, Tensor):
        shape = tuple(int(s) for s in example)
        if not shape or any(s <= 0 for s in shape):
            raise ValueError(f"example shape must be positive dimensions, got {shape}")
        p = next(iter(model.parameters()), None)
        device = device or (p.device if p is not None else torch.device("cpu"))
        example = torch.zeros((1,) + shape, device=device)
    if example.dim() < 2:
        raise ValueError(f"example needs a batch dimension, got shape {tuple(example.shape)}")
    batch = int(example.shape[0])
    layers: Dict[str, Dict[str, int]] = {}
    handles = []

    def hook(name: str):
        def fn(m: nn.Module, inp, out: Tensor) -> None:
            w = m.weight
            nnz = int((w != 0).sum())
            if isinstance(m, nn.Linear):
                positions = out.numel() // batch // m.out_features
                dense = positions * m.out_features * m.in_features
            else:
                positions = out.numel() // batch // m.out_channels
                dense = positions * w.numel()
            rec = layers.setdefault(name, {"macs": 0, "nonzero_macs": 0})
            rec["macs"] += dense
            rec["nonzero_macs"] += positions * nnz
        return fn

    for name, m in model.named_modules():
        if isinstance(m, _LAYERS):
            handles.append(m.register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    params = sum(p.numel() for p in model.parameters())
    nz = sum(int((p != 0).sum()) for p in model.parameters())
    return {
        "macs": sum(r["macs"] for r in layers.values()),
        "nonzero_macs": sum(r["nonzero_macs"] for r in layers.values()),
        "params": int(params),
        "nonzero_params": int(nz),
        "layers": layers,
    }
