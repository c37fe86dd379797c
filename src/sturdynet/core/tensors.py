"""The one set of tensor helpers every family shares: where a model lives, its logits in
eval mode, and which samples it classifies correctly."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor, nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU if it has neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the whole model is in eval mode; on exit (also after an exception)
    every submodule gets back its own train/eval flag, so a model whose BatchNorm layers
    were frozen (eval) inside a training model comes back exactly as it was."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in flags:
            m.training = was


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Logits of ``model`` in eval mode, on the CPU (every submodule's train/eval flag is restored)."""
    device = model_device(model)
    with eval_mode(model):
        outs = [model(xb.to(device)).cpu() for xb in x.split(batch_size)] if len(x) else []
    return torch.cat(outs) if outs else torch.empty(0)


def correct_mask(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> Tensor:
    """Boolean (N,) tensor: is each sample classified correctly."""
    return predict(model, x, batch_size).argmax(1) == y.cpu()


def memory_format_for(model: nn.Module, device: torch.device,
                      channels_last: Optional[bool] = None) -> torch.memory_format:
    """``channels_last`` for convolutional models on CPU (oneDNN's fast layout; about 1.3x
    per ResNet-20 step at one thread, see BENCHMARKS.md), else the contiguous layout.
    ``channels_last`` True / False forces the choice."""
    if channels_last is None:
        channels_last = device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if channels_last else torch.contiguous_format
