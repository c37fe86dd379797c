"""Activation statistics on a calibration batch, for post-training calibration and
for initializing learned activation quantizers (LSQ, fixed point).

One forward pass of the calibration batch, in eval mode and without gradients, with
every input quantizer switched off (weights already quantized), records per watched
module the statistics of its input (``where="input"``) or output (``where="output"``).
Statistics are reduced on the fly, so no activation tensor is kept.

Signedness rule used by the quantization methods: a tensor is quantized as
*unsigned* when its calibration values are all >= 0 (the input of a layer that
follows a ReLU), and as signed otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..data.base import batches


@dataclass
class ActStats:
    """Statistics of one tensor over the calibration batch."""

    min: float
    max: float
    abs_max: float
    mean_abs: float
    percentile: float  # of |x| (signed) or of x (unsigned), at the requested level
    features: int  # elements per sample
    sample: Tensor  # a random subset of the values (for MSE searches), at most 65536

    @property
    def signed(self) -> bool:
        return self.min < 0


def _stats(x: Tensor, percentile: float, gen: torch.Generator) -> ActStats:
    x = x.detach().float()
    flat = x.reshape(-1)
    signed = bool(flat.min() < 0)
    mag = flat.abs() if signed else flat.clamp(min=0)
    k = max(1, min(mag.numel(), int(round(percentile / 100 * mag.numel()))))
    pct = float(mag.kthvalue(k).values) if percentile < 100 else float(mag.max())
    idx = torch.randperm(flat.numel(), generator=gen)[:65536].to(flat.device)
    return ActStats(min=float(flat.min()), max=float(flat.max()), abs_max=float(flat.abs().max()),
                    mean_abs=float(flat.abs().mean()), percentile=pct,
                    features=int(x[0].numel()) if x.dim() > 1 else int(x.numel()), sample=flat[idx].cpu())


def calibration_batch(data: Any, samples: int, device: torch.device) -> Tensor:
    """The first ``samples`` training images of a data bundle, on ``device``."""
    if data is None or getattr(data, "train", None) is None:
        raise ValueError("activation quantization needs calibration data (ctx.data with a train split)")
    if samples < 1:
        raise ValueError(f"calibration samples must be >= 1, got {samples}")
    return data.train.x[:samples].to(device)


@torch.no_grad()
def collect_stats(model: nn.Module, modules: Sequence[nn.Module], x: Tensor, where: str = "input",
                  percentile: float = 99.99, batch_size: int = 256,
                  disable: Sequence[nn.Module] = ()) -> Dict[nn.Module, ActStats]:
    """Run ``x`` through ``model`` and return input/output statistics of ``modules``.

    Args:
        where: ``"input"`` (first positional input) or ``"output"``.
        disable: modules whose ``act_quantizer`` / ``out_quantizer`` are switched off
            during the pass (the un-quantized activations are what is measured).
    """
    if where not in ("input", "output"):
        raise ValueError(f"where must be 'input' or 'output', got {where!r}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    captured: Dict[nn.Module, List[Tensor]] = {m: [] for m in modules}
    handles = []
    for m in modules:
        if where == "input":
            handles.append(m.register_forward_pre_hook(lambda mod, inp: captured[mod].append(inp[0].detach())))
        else:
            handles.append(m.register_forward_hook(lambda mod, inp, out: captured[mod].append(out.detach())))
    saved = []
    for m in disable:
        for attr in ("act_quantizer", "out_quantizer"):
            if getattr(m, attr, None) is not None:
                saved.append((m, attr, getattr(m, attr)))
                setattr(m, attr, None)
    was = model.training
    model.eval()
    try:
        for xb, _ in batches(_Split(x), batch_size):
            model(xb)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
        for m, attr, q in saved:
            setattr(m, attr, q)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for m, parts in captured.items():
        if not parts:
            raise ValueError(f"calibration pass never reached {type(m).__name__}")
        out[m] = _stats(torch.cat(parts), percentile, gen)
    return out


class _Split:
    """Adapter so :func:`sturdynet.data.base.batches` can slice a bare tensor."""

    def __init__(self, x: Tensor) -> None:
        self.x = x
        self.y = torch.zeros(x.shape[0], dtype=torch.long)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: Tensor, batch_size: int = 256) -> int:
    """Re-estimate every batch-norm layer's running statistics on ``x``.

    The statistics are reset and accumulated as a plain average over the batches of
    ``x`` (momentum None), with the model in train mode and no gradients; nothing else
    changes. Returns the number of batch-norm layers updated.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [(m, m.momentum) for m in bns]
    was = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for xb, _ in batches(_Split(x), batch_size):
            model(xb)
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was)
    return len(bns)


def best_power_of_two_frac(sample: Tensor, bits: int, signed: bool, abs_max: float,
                           search: Optional[Sequence[int]] = None) -> int:
    """Fractional bits ``f`` minimizing the squared error of ``b``-bit fixed point on ``sample``.

    Candidates are ``f0 - 2 .. f0 + 4`` around ``f0``, the largest ``f`` whose range
    still covers ``abs_max`` (``search`` overrides the candidates).
    """
    import math

    top = bits - 1 if signed else bits
    f0 = top - math.ceil(math.log2(max(abs_max, 1e-12)))
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    best, best_err = f0, float("inf")
    for f in (search if search is not None else range(f0 - 2, f0 + 5)):
        s = 2.0 ** (-f)
        q = torch.clamp(torch.round(sample / s), lo, hi) * s
        err = float(((q - sample) ** 2).sum())
        if err < best_err:
            best, best_err = f, err
    return int(best)
