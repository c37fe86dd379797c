"""How completely FT-ClipAct (arXiv 1912.00941) covers a model's activations, measured on
one batch: calls that share a threshold with an earlier call of the same clip module
(a module FT-ClipAct could not separate into sites) and activation function calls that
run outside every clip module (functional calls inside a module that could not be traced).
A non-zero count is a partial defense and is reported with a warning."""
from __future__ import annotations

import warnings
from typing import Any, Dict, List

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .clipact_sites import CLIP_FUNC_NAMES, CLIP_TYPES, ActivationClip, module_kind


class _CountCalls(TorchFunctionMode):
    """Counts clippable activation functions called outside activation/clip modules."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.calls: Dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if self.depth == 0 and name in CLIP_FUNC_NAMES:
            kind = name.rstrip("_")
            self.calls[kind] = self.calls.get(kind, 0) + 1
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def clip_coverage(model: nn.Module, report: Dict[str, Any], x: Tensor) -> Dict[str, Any]:
    """The coverage facts of a clipped ``model`` (from ``clip_sites``'s ``report`` and one
    forward pass on ``x``); warns when some activation calls are not separately clipped.

    Returns:
        ``traced``, ``opaque`` (untraceable modules, ``""`` = the whole model), ``sites``
        (number of clip sites), ``clipped`` (kind -> sites), ``left_alone`` (kind -> sites),
        ``shared_calls`` (calls of a clip module beyond its first in one forward),
        ``unclipped_calls`` (kind -> activation function calls outside every clip module),
        ``warning`` (the warning issued, or None; results.json keeps it in ``method_log``).
    """
    counter = _CountCalls()
    per_module: Dict[str, int] = {}
    handles: List[Any] = []
    for name, m in model.named_modules():
        if module_kind(m)[0] is None:
            continue

        def pre(mod, inp, name=name):
            counter.depth += 1
            if isinstance(mod, CLIP_TYPES):
                per_module[name] = per_module.get(name, 0) + 1

        def post(mod, inp, out):
            counter.depth -= 1
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post, always_call=True)]
    was = model.training
    model.eval()
    try:
        with counter:
            model(x.to(next((t.device for t in model.parameters()), x.device)))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    mods = dict(model.named_modules())
    for name, kind in report["sites"].items():  # a kept activation function feeds its ActivationClip
        if "_fn@" in name and kind in counter.calls and isinstance(mods.get(name), ActivationClip):
            counter.calls[kind] -= per_module.get(name, 0)
    counter.calls = {k: v for k, v in counter.calls.items() if v > 0}
    clipped: Dict[str, int] = {}
    for kind in report["sites"].values():
        clipped[kind] = clipped.get(kind, 0) + 1
    out = {"traced": report["traced"], "opaque": list(report["opaque"]), "reason": report["reason"],
           "sites": len(report["sites"]), "clipped": clipped, "left_alone": dict(report["left_alone"]),
           "shared_calls": sum(c - 1 for c in per_module.values() if c > 1), "unclipped_calls": counter.calls}
    missed = out["shared_calls"] + sum(counter.calls.values())
    hidden = {k: v for k, v in out["left_alone"].items() if "untraceable" in k}
    out["warning"] = None
    if missed or hidden:
        where = "the model" if out["opaque"] == [""] else \
            "module(s) " + ", ".join(repr(n) for n in out["opaque"])
        traced = f"{where} could not be traced through ({out['reason']}); " if out["opaque"] else ""
        out["warning"] = (f"faults.clipact: {traced}{missed} activation call site(s) could not be separated: "
                          f"{out['shared_calls']} call(s) share an earlier call's threshold, "
                          f"{sum(counter.calls.values())} functional call(s) are not clipped "
                          f"({counter.calls or 'none'}), activation modules left alone: {hidden or 'none'}")
        warnings.warn(out["warning"], stacklevel=3)
    return out
