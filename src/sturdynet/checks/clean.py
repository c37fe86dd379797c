"""The ``clean`` check: accuracy and loss on unperturbed test images."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.registry import CHECKS
from .base import CheckContext, SampleParams, eval_split, summarize
from ..core.tensors import predict


@dataclass(frozen=True)
class CleanParams(SampleParams):
    """``amp``: float16 autocast on CUDA (ignored on the CPU)."""

    amp: bool = False


@CHECKS.register("clean", params=CleanParams)
def clean(model, data, params: CleanParams, ctx: CheckContext) -> dict:
    """Top-1 accuracy and mean cross-entropy on the test split."""
    split = eval_split(data, params.samples)
    with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=params.amp and ctx.device.type == "cuda"):
        logits = predict(model, split.x, params.batch_size).float()
    loss = float(F.cross_entropy(logits, split.y, reduction="mean")) if len(split) else 0.0
    return summarize(logits.argmax(1) == split.y, loss=loss)
