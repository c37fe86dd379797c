"""The ``clean`` check: accuracy and loss on unperturbed test images."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.registry import CHECKS
from .base import CheckContext, SampleParams, eval_split, summarize
from ..core.tensors import eval_mode, model_device
from ..data.base import batches


@dataclass(frozen=True)
class CleanParams(SampleParams):
    """``amp``: float16 autocast on CUDA (ignored on the CPU)."""

    amp: bool = False


@CHECKS.register("clean", params=CleanParams)
def clean(model, data, params: CleanParams, ctx: CheckContext) -> dict:
    """Top-1 accuracy and mean cross-entropy on the test split, batch by batch (only the
    per-sample outcomes are kept, so a streamed test split is never held in memory)."""
    split = eval_split(data, params.samples)
    device = model_device(model)
    correct, loss_sum = [], 0.0
    with eval_mode(model), torch.no_grad(), \
            torch.autocast(device.type, dtype=torch.float16, enabled=params.amp and device.type == "cuda"):
        for xb, yb in batches(split, params.batch_size):
            logits = model(xb.to(device)).float()
            yb = yb.to(device)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct.append((logits.argmax(1) == yb).cpu())
    n = len(split)
    return summarize(torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool),
                     loss=loss_sum / n if n else 0.0)
