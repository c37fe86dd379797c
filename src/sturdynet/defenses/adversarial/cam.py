"""Grad-CAM class activation maps (Selvaraju et al., arXiv 1610.02391).

For the chosen convolutional layer with activations A (N, K, h, w) and the logit y_c of
class c: weights a_k = mean_{i,j} d y_c / d A_k[i, j], map = ReLU(sum_k a_k A_k),
bilinearly upsampled to the input size. The model's parameters' ``.grad`` are not
touched (gradients are taken w.r.t. the activations only).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def last_conv(model: nn.Module) -> nn.Module:
    """The last nn.Conv2d of the model (the usual Grad-CAM layer)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a model with at least one nn.Conv2d layer")
    return convs[-1]


def grad_cam(model: nn.Module, x: Tensor, classes: Tensor, layer: Optional[nn.Module] = None) -> Tensor:
    """Class activation maps (N, 1, H, W), non-negative, for ``classes`` (N,)."""
    layer = layer or last_conv(model)
    store = {}

    def hook(_m, _inp, out):
        store["a"] = out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.detach())
            act = store["a"]
            score = logits.gather(1, classes.view(-1, 1)).sum()
            grad, = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act.detach()).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
