"""FT-ClipAct: clipped activations against weight-memory faults (Hoang, Hanif and
Shafique, arXiv 1912.00941).

A fault in a high-order bit (above all a float exponent bit) makes a weight huge, and
the huge activations it produces propagate to the output. FT-ClipAct replaces every
unbounded ReLU by a clipped one that *zeroes* activations above a per-layer threshold
``T`` (``f(x) = x`` for ``0 <= x <= T``, else ``0``: a value above ``T`` is taken as
faulty rather than saturated), then chooses each ``T``. A "layer" is an activation call
site (:mod:`.clipact_sites`): a ReLU module called twice has two thresholds, functional
``F.relu`` / ``torch.relu`` / ``x.relu()`` calls are clipped too.

1. Profiling: run the fault-free model on validation data and record each layer's
   largest activation ``act_max``; every threshold starts there.
2. Site by site, in execution order, an interval search on ``[0, act_max]``: evaluate four
   equally spaced thresholds; for each, the area under the accuracy-against-fault-rate
   curve (AUC, trapezoid over equally spaced rate points, so the AUC is in accuracy
   units) under Monte-Carlo weight faults; keep the best; narrow the interval to the
   best point's neighbours; repeat ``iterations`` times, stopping early (after at least
   ``min_iterations``) when adjacent AUCs differ by at most ``delta``.

Faults for the search are injected with :class:`~sturdynet.faults.ber.BitErrors` in the
same bit view as the evaluation (default float32 weights, the paper's setting, at the
fault rates 1e-7 to 3e-5). The same seeded faulty copies are used for every candidate
(common random numbers), so candidates are compared on identical faults.

Deviations: the search data are the validation split (the paper does not name its
subset); the thresholds are buffers, so checkpoints restore them. ReLU6 and the
activations unbounded above (LeakyReLU, PReLU, ELU, GELU, SiLU, Hardswish, ...) are
clipped too (:class:`ActivationClip`: the output is zeroed where the pre-activation
exceeds ``T``; the paper clips ReLU only); bounded ones are left alone. Where a module
cannot be traced, its ReLU modules are replaced whole and the calls left unseparated are
counted and warned about (:mod:`.clipact_coverage`); ``ctx.log["clipact"]["coverage"]``
reports the sites per kind and the kinds left alone.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..core.method import MethodContext, CompressionMethod
from ..core.params import rng
from ..data.base import Split, batches
from ..core.registry import METHODS
from ..faults.ber import BitErrors
from ..faults.bitview import FloatLayers, ViewParams
from ..faults.common import accuracy, trial_generator
from .clipact_sites import CLIP_TYPES, ActivationClip, ClippedReLU, clip_sites, replace_relu_modules
from .clipact_coverage import clip_coverage

__all__ = ["ActivationClip", "ClipAct", "ClipActParams", "ClippedReLU", "auc", "clip_sites", "profile_max",
           "replace_relus"]


def replace_relus(model: nn.Module) -> List[Tuple[str, ClippedReLU]]:
    """Replace (in place) every ``nn.ReLU`` module by a :class:`ClippedReLU` (threshold inf).

    Module replacement only: a module called at several sites keeps one threshold and
    functional calls are not seen; the method uses :func:`clip_sites` (one clip per call
    site) instead.

    Raises:
        ValueError: the model has no ReLU modules (functional ``F.relu`` calls cannot
            be replaced).
    """
    if not any(type(m) is nn.ReLU or isinstance(m, ClippedReLU) for m in model.modules()):
        raise ValueError("faults.clipact: the model has no nn.ReLU modules to clip")
    replace_relu_modules(model, "", {"sites": {}, "left_alone": {}})
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ClippedReLU)]


@torch.no_grad()
def profile_max(model: nn.Module, split: Split, batch_size: int = 256) -> Dict[str, float]:
    """Largest activation of each clip site over ``split`` (fault-free, eval mode): the
    largest pre-activation ``x`` of the site, at least 0 (for a ReLU, its largest output)."""
    acts: Dict[str, float] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, CLIP_TYPES):
            acts[name] = 0.0

            def hook(mod, inp, out, name=name):
                x = inp[0]
                acts[name] = max(acts[name], float(x.max()) if x.numel() else 0.0)
            handles.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for x, _ in batches(split, batch_size):
            model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return acts


def auc(accs: List[float]) -> float:
    """Trapezoid area under accuracies at equally spaced points of [0, 1] (one point: itself)."""
    if len(accs) == 1:
        return float(accs[0])
    h = 1.0 / (len(accs) - 1)
    return float(sum((a + b) * h / 2 for a, b in zip(accs, accs[1:])))


@dataclass(frozen=True)
class ClipActParams(ViewParams):
    """Search settings; ``bits``/``float_layers``/``per_channel`` give the fault view."""

    float_layers: FloatLayers = "float32"
    rates: Tuple[float, ...] = (1e-7, 1e-6, 3e-6, 1e-5, 3e-5)
    trials: int = rng(1, None, default=3)
    iterations: int = rng(1, None, default=4)
    min_iterations: int = rng(1, None, default=3)
    delta: float = rng(0, None, default=0.002)
    samples: int = rng(1, None, default=500)
    batch_size: int = rng(1, None, default=256)


@METHODS.register("faults.clipact", params=ClipActParams)
class ClipAct(CompressionMethod):
    """Replace ReLUs by FT-ClipAct clipped ReLUs with fault-searched thresholds (needs ``ctx.data``)."""

    def prepare(self, model: nn.Module, params: ClipActParams) -> nn.Module:
        return self.clip(model)[0]

    @staticmethod
    def clip(model: nn.Module) -> Tuple[nn.Module, dict]:
        """A copy of ``model`` with one clip module per activation call site, and the
        :func:`~sturdynet.defenses.clipact_sites.clip_sites` report.

        Raises:
            ValueError: the model has no activation FT-ClipAct can clip.
        """
        model, report = clip_sites(copy.deepcopy(model))
        if not report["sites"]:
            left = ", ".join(sorted(report["left_alone"])) or "none"
            raise ValueError("faults.clipact: the model has no activation to clip (ReLU, ReLU6, LeakyReLU, ELU, "
                             f"GELU, SiLU, Hardswish, ...; bounded activations found: {left})")
        return model, report

    def apply(self, model: nn.Module, params: ClipActParams, ctx: Optional[MethodContext] = None) -> nn.Module:
        if ctx is None or ctx.data is None:
            raise ValueError("faults.clipact needs data to profile activations and search thresholds: "
                             "pass ctx=MethodContext(data=...)")
        if params.float_layers not in ("int", "float32", "float16", "skip"):
            raise ValueError(f"float_layers must be int, float32, float16 or skip, got {params.float_layers!r}")
        if not params.rates or any(not 0 < r <= 1 for r in params.rates):
            raise ValueError(f"rates must be a non-empty list in (0, 1], got {params.rates}")
        split = ctx.data.val if len(ctx.data.val) else ctx.data.train
        split = split.take(params.samples)
        model, report = self.clip(model)
        model.eval()
        names = {n for n, m in model.named_modules() if isinstance(m, CLIP_TYPES)}
        layers = [n for n in report["sites"] if n in names]  # execution order when traced
        coverage = clip_coverage(model, report, next(iter(batches(split, 8)))[0])
        act_max = profile_max(model, split, params.batch_size)
        for n in layers:
            model.get_submodule(n).threshold.fill_(act_max[n])
        log = self.search(model, layers, act_max, split, params, ctx.seed)
        ctx.log["clipact"] = {**log, "coverage": coverage}
        return model

    def search(self, model: nn.Module, layers: List[str], act_max: Dict[str, float], split: Split,
               params: ClipActParams, seed: int) -> dict:
        """The layer-by-layer interval search; sets the thresholds of ``model`` in place."""
        fm = [BitErrors(r, False, params.bits, params.float_layers, params.per_channel) for r in params.rates]
        faulty = [[f.inject(model, trial_generator(seed, 53, j, t))[0].eval() for t in range(params.trials)]
                  for j, f in enumerate(fm)]

        def score(layer: str, thr: float) -> float:
            accs = []
            for per_rate in faulty:
                vals = []
                for fmod in per_rate:
                    fmod.get_submodule(layer).threshold.fill_(thr)
                    vals.append(accuracy(fmod, split, params.batch_size))
                accs.append(sum(vals) / len(vals))
            return auc(accs)

        def set_all(layer: str, thr: float) -> None:
            model.get_submodule(layer).threshold.fill_(thr)
            for per_rate in faulty:
                for fmod in per_rate:
                    fmod.get_submodule(layer).threshold.fill_(thr)

        out = {"act_max": act_max, "thresholds": {}, "auc": {}}
        for layer in layers:
            lo, hi = 0.0, act_max[layer]
            best_t, best_auc = hi, score(layer, hi)
            for it in range(params.iterations):
                ts = [lo + (hi - lo) * i / 3 for i in range(4)]
                aucs = [score(layer, t) for t in ts]
                k = max(range(4), key=lambda i: (aucs[i], ts[i]))
                if aucs[k] >= best_auc:
                    best_t, best_auc = ts[k], aucs[k]
                lo, hi = (ts[2], ts[3]) if k == 3 else (ts[0], ts[1]) if k == 0 else (ts[k - 1], ts[k + 1])
                if it + 1 >= params.min_iterations and max(abs(a - b) for a, b in zip(aucs, aucs[1:])) <= params.delta:
                    break
            set_all(layer, best_t)
            out["thresholds"][layer] = best_t
            out["auc"][layer] = best_auc
        return out
