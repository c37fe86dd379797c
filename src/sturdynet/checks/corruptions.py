"""The ``corruptions`` check: accuracy under common corruptions and the corruption errors.

Hendrycks & Dietterich, arXiv 1903.12261. For every listed corruption ``c`` and severity
``s`` the test images are corrupted once (seeded by the run seed, the corruption and the
severity, so every variant sees the same corrupted images) and classified by the variant
and by the baseline variant. With ``E`` the top-1 error:

- ``CE_c = sum_s E_{s,c}(f) / sum_s E_{s,c}(baseline)`` and ``mCE`` = mean of ``CE_c``;
- relative ``CE_c = sum_s (E_{s,c}(f) - E_clean(f)) / sum_s (E_{s,c}(baseline) - E_clean(baseline))``
  and relative ``mCE`` = their mean.

Deviation: the paper normalises by AlexNet's errors; here the baseline is a variant of the
run (``dense`` by default), so ``mCE = 1`` means "as robust as the baseline". Ratios, not
percentages. A ratio whose denominator is not positive (the baseline never errs, or is not
hurt by the corruption) is undefined: it is recorded as null, named in ``undefined_ce`` /
``undefined_relative_ce`` and left out of the mean.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core import progress
from ..core.params import rng
from ..data.base import DataBundle, batches
from .base import CheckContext, SampleParams, eval_split, summarize
from ..core.tensors import correct_mask, predict
from ..core.registry import CHECKS, CORRUPTIONS
from ..corruptions.base import BENCHMARK, SEVERITIES, corrupt

@dataclass(frozen=True)
class CorruptionCheckParams(SampleParams):
    """``per_sample_severity``: the severity at which ``per_sample`` is judged (None: 3 if listed,
    else the highest listed severity)."""

    corruptions: Tuple[str, ...] = BENCHMARK
    severities: Tuple[int, ...] = rng(1, 5, default=SEVERITIES)
    baseline: Optional[str] = "dense"
    per_sample_severity: Optional[int] = rng(1, 5, default=None)
    samples: Optional[int] = rng(1, None, default=1000)

    def __post_init__(self) -> None:
        if not self.corruptions:
            raise ValueError("corruptions: must list at least one corruption")
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"corruptions: {CORRUPTIONS.unknown(unknown[0])}")
        if len(set(self.corruptions)) != len(self.corruptions):
            raise ValueError("corruptions: lists a corruption twice")
        if not self.severities or len(set(self.severities)) != len(self.severities):
            raise ValueError(f"severities: must be distinct values in 1..5, got {list(self.severities)}")
        if self.per_sample_severity is not None and self.per_sample_severity not in self.severities:
            raise ValueError(f"per_sample_severity: {self.per_sample_severity} is not among the severities "
                             f"{list(self.severities)}")

    @property
    def judged_severity(self) -> int:
        if self.per_sample_severity is not None:
            return self.per_sample_severity
        return 3 if 3 in self.severities else max(self.severities)


def corruption_generator(seed: int, name: str, severity: int) -> torch.Generator:
    """The CPU generator for one (corruption, severity): the same for every variant of a run."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode()) * 11 + severity) % (2 ** 62))


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den > 1e-12 else None


def _mean(values: List[Optional[float]]) -> Optional[float]:
    ok = [v for v in values if v is not None]
    return sum(ok) / len(ok) if ok else None


def _severity_label(severities: Tuple[int, ...]) -> str:
    s = sorted(severities)
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 1:
        return f"mean {s[0]}-{s[-1]}"
    return "mean " + ",".join(map(str, s))


@torch.no_grad()
def _corrupted_correct(models: List[nn.Module], split, name: str, severity: int, params: CorruptionCheckParams,
                       ctx: CheckContext) -> List[Tensor]:
    """Per model, the (N,) correct flags on the split corrupted by ``name`` at ``severity``."""
    gen = corruption_generator(ctx.seed, name, severity)
    out: List[List[Tensor]] = [[] for _ in models]
    for xb, yb in batches(split, params.batch_size):
        xc = corrupt(xb.to(ctx.device), name, severity, gen)
        for i, m in enumerate(models):
            out[i].append(predict(m, xc, params.batch_size).argmax(1) == yb.cpu())
    return [torch.cat(o) if o else torch.zeros(0, dtype=torch.bool) for o in out]


def _errors_against(ok: Dict[str, Dict[int, Tensor]], clean: Tensor, base_ok: Dict[str, Dict[int, Tensor]],
                    base_clean: Tensor) -> Dict[str, Dict[str, Optional[float]]]:
    """CE and relative CE per corruption from per-severity correct flags."""
    e_clean, b_clean = 1 - float(clean.double().mean()), 1 - float(base_clean.double().mean())
    out = {}
    for name, per_s in ok.items():
        e = [1 - float(per_s[s].double().mean()) for s in per_s]
        b = [1 - float(base_ok[name][s].double().mean()) for s in per_s]
        out[name] = {"ce": _ratio(sum(e), sum(b)),
                     "relative_ce": _ratio(sum(v - e_clean for v in e), sum(v - b_clean for v in b))}
    return out


@CHECKS.register("corruptions", params=CorruptionCheckParams)
def corruptions_check(model: nn.Module, data: DataBundle, params: CorruptionCheckParams, ctx: CheckContext) -> dict:
    """Accuracy under every listed corruption and severity, CE / mCE against the baseline variant.

    Metrics: ``kind: corruption``; ``accuracy``: mean over corruptions and severities;
    ``curve``: per severity the mean over corruptions; ``per_corruption``: {name: {severity:
    accuracy}} (severity keys as strings, as JSON stores them); ``per_sample``: 1 where the
    sample is correct on the clean image and under every listed corruption at
    ``per_sample_severity``; ``clean_accuracy``; with a baseline: ``mce``, ``relative_mce``,
    ``corruption_errors`` ({name: {ce, relative_ce}}), ``baseline_clean_accuracy``.
    """
    split = eval_split(data, params.samples)
    base = None
    if params.baseline is not None:
        base = ctx.models.get(params.baseline)
        if base is None:
            have = ", ".join(sorted(ctx.models)) or "none"
            raise ValueError(f"corruptions: baseline variant {params.baseline!r} is not available (variants: {have}); "
                             "set baseline: null to skip the corruption errors")
    models = [model] if base is None or base is model else [model, base]
    clean = correct_mask(model, split.x, split.y, params.batch_size)
    base_clean = clean if len(models) == 1 else correct_mask(base, split.x, split.y, params.batch_size)
    ok: Dict[str, Dict[int, Tensor]] = {}
    base_ok: Dict[str, Dict[int, Tensor]] = {}
    n_jobs, done = len(params.corruptions) * len(params.severities), 0
    for name in params.corruptions:
        ok[name], base_ok[name] = {}, {}
        for s in params.severities:
            flags = _corrupted_correct(models, split, name, s, params, ctx)
            done += 1
            progress.tick(done, n_jobs)
            ok[name][s], base_ok[name][s] = flags[0], flags[-1]
    acc = {n: {s: float(f.double().mean()) for s, f in per_s.items()} for n, per_s in ok.items()}
    judged = params.judged_severity
    robust = clean.clone()
    for per_s in ok.values():
        robust &= per_s[judged]
    curve = [{"severity": s, "accuracy": sum(acc[n][s] for n in acc) / len(acc)} for s in params.severities]
    out = summarize(robust, kind="corruption")
    out.update({
        "accuracy": sum(p["accuracy"] for p in curve) / len(curve),
        "per_sample_accuracy": out["accuracy"],
        "severity": _severity_label(params.severities), "per_sample_severity": judged,
        "clean_accuracy": float(clean.double().mean()) if len(split) else 0.0,
        "substitutes": [n for n in params.corruptions if CORRUPTIONS.get(n).substitute],
        "curve": curve,
        "per_corruption": {n: {str(s): a for s, a in per_s.items()} for n, per_s in acc.items()},
    })
    if base is not None:
        errs = _errors_against(ok, clean, base_ok, base_clean)
        out.update({
            "baseline": params.baseline,
            "baseline_clean_accuracy": float(base_clean.double().mean()) if len(split) else 0.0,
            "mce": _mean([e["ce"] for e in errs.values()]),
            "relative_mce": _mean([e["relative_ce"] for e in errs.values()]),
            "undefined_ce": [n for n, e in errs.items() if e["ce"] is None],
            "undefined_relative_ce": [n for n, e in errs.items() if e["relative_ce"] is None],
            "corruption_errors": errs,
        })
    return out
