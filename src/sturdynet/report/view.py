"""Derived facts of a run, computed once from validated ``results.json`` data.

Everything the tables, plots and the CLI summary need beyond the raw fields lives here:
the reference size for compression ratios, the ordered list of checks, check labels,
curve x keys and the robust-accuracy summary. Checks are handled generically through the
metric conventions (``accuracy``, optional ``curve``, ``flags``, scalar extras).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .format import check_label, fmt_num
from .schema import curve_x_key

CLEAN = "clean"
ROBUST = "robust"


@dataclass(frozen=True)
class Robust:
    """The robust-accuracy summary of one variant.

    Attributes:
        accuracy: the value, None when the variant has no non-clean check.
        source: the check id that gave it.
        from_min: True when it is the minimum over checks (no ``robust`` check ran).
        incomplete: a check that entered the minimum failed or is missing for this variant,
            so the true worst case may be lower.
    """

    accuracy: Optional[float]
    source: Optional[str]
    from_min: bool
    incomplete: bool = False


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


class RunView:
    """Read-only view of one run's results with the derived quantities."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.results = results
        self.variants: List[Mapping[str, Any]] = list(results["variants"])
        self.recipe: Mapping[str, Any] = results.get("recipe") or {}
        self._check_names = self._names_from_recipe()
        self.check_ids = self._collect_checks()
        self.reference = self._reference()

    # ---- checks -------------------------------------------------------------------
    def _names_from_recipe(self) -> Dict[str, str]:
        out: Dict[str, str] = {}
        for c in self.recipe.get("evaluate") or []:
            if isinstance(c, Mapping) and isinstance(c.get("check"), str):
                out[str(c.get("id", c["check"]))] = c["check"]
            elif isinstance(c, str):
                out[c] = c
        return out

    def _collect_checks(self) -> List[str]:
        """Check ids in recipe order, then any others in order of first appearance."""
        seen: List[str] = []
        for cid in self._check_names:
            if any(cid in self.metrics(v) for v in self.variants):
                seen.append(cid)
        for v in self.variants:
            for cid in self.metrics(v):
                if cid not in seen:
                    seen.append(cid)
        return sorted(seen, key=lambda c: 0 if self.check_name(c) == CLEAN else 1)

    def check_name(self, check_id: str) -> str:
        """The registered check name behind an id (the id itself when the recipe does not say)."""
        return self._check_names.get(check_id, check_id)

    def label(self, check_id: str) -> str:
        return check_label(check_id, self.check_name(check_id))

    @property
    def clean_id(self) -> Optional[str]:
        return next((c for c in self.check_ids if self.check_name(c) == CLEAN), None)

    @property
    def robust_id(self) -> Optional[str]:
        return next((c for c in self.check_ids if self.check_name(c) == ROBUST), None)

    @property
    def other_ids(self) -> List[str]:
        """Checks that get their own column: all but the clean and the robust check."""
        return [c for c in self.check_ids if c not in (self.clean_id, self.robust_id)]

    @property
    def attack_ids(self) -> List[str]:
        """Checks that enter the robust minimum: the input-attack checks. A check whose
        metrics carry a ``kind`` (``fault``: accuracy after a number of bit flips or bit
        errors; ``corruption``, ``backdoor``, ``certified``: other threat models) reports
        something other than robustness to adversarial inputs and keeps its own column."""
        return [c for c in self.other_ids
                if not any((self.metrics(v).get(c) or {}).get("kind") for v in self.variants)]

    def curve_ids(self) -> List[str]:
        return [c for c in self.check_ids if any(self.metrics(v).get(c, {}).get("curve") for v in self.ok_variants)]

    # ---- variants -----------------------------------------------------------------
    @staticmethod
    def metrics(variant: Mapping[str, Any]) -> Mapping[str, Any]:
        return variant.get("metrics") or {}

    @property
    def ok_variants(self) -> List[Mapping[str, Any]]:
        return [v for v in self.variants if v.get("status") == "ok"]

    def accuracy(self, variant: Mapping[str, Any], check_id: Optional[str]) -> Optional[float]:
        if check_id is None:
            return None
        m = self.metrics(variant).get(check_id)
        return m.get("accuracy") if m else None

    def robust(self, variant: Mapping[str, Any]) -> Robust:
        """The ``robust`` check's accuracy, else the minimum over the input-attack checks."""
        rid = self.robust_id
        acc = self.accuracy(variant, rid)
        if rid is not None and acc is not None:
            return Robust(acc, rid, False)
        best: Tuple[Optional[float], Optional[str]] = (None, None)
        missing = False
        for cid in self.attack_ids:
            a = self.accuracy(variant, cid)
            if not _num(a):
                missing = True
            elif best[0] is None or a < best[0]:
                best = (a, cid)
        return Robust(best[0], best[1], True, missing and best[0] is not None)

    def check_error(self, variant: Mapping[str, Any], check_id: str) -> Optional[str]:
        """The error message of a check that failed on this variant (None if it ran or never started)."""
        m = self.metrics(variant).get(check_id) or {}
        return m.get("error") if "accuracy" not in m else None

    def planned_variants(self) -> List[str]:
        """Names of every variant the run builds: a sweep's expanded names, else the recipe's."""
        sweep = self.results.get("sweep")
        if isinstance(sweep, Mapping) and isinstance(sweep.get("variant_names"), list):
            return [n for n in sweep["variant_names"] if isinstance(n, str)]
        return [v["name"] for v in self.recipe.get("variants") or []
                if isinstance(v, Mapping) and isinstance(v.get("name"), str)]

    # ---- sizes --------------------------------------------------------------------
    def _reference(self) -> Tuple[Optional[str], Optional[int]]:
        sized = [v for v in self.variants if isinstance(v.get("size_bytes"), int)]
        for pick in (lambda v: v["name"] == "dense", lambda v: not v.get("method")):
            found = [v for v in sized if pick(v)]
            if found:
                return found[0]["name"], found[0]["size_bytes"]
        if sized:
            big = max(sized, key=lambda v: v["size_bytes"])
            return big["name"], big["size_bytes"]
        return None, None

    @property
    def reference_is_dense(self) -> bool:
        name = self.reference[0]
        v = next((v for v in self.variants if v["name"] == name), None)
        return v is not None and (name == "dense" or not v.get("method"))

    def ratio(self, variant: Mapping[str, Any]) -> Optional[float]:
        """Compression ratio: reference size / this variant's size."""
        size, ref = variant.get("size_bytes"), self.reference[1]
        if not size or not ref:
            return None
        return ref / size

    # ---- curves -------------------------------------------------------------------
    def curve(self, variant: Mapping[str, Any], check_id: str) -> Tuple[Optional[str], List[Mapping[str, Any]]]:
        """``(x_key, points)`` of a variant's curve for a check (``(None, [])`` without one)."""
        pts = (self.metrics(variant).get(check_id) or {}).get("curve") or []
        return (curve_x_key(pts[0]) if pts else None), pts

    def curve_x_key(self, check_id: str) -> Optional[str]:
        for v in self.ok_variants:
            key, _ = self.curve(v, check_id)
            if key:
                return key
        return None

    def setting(self, check_id: str) -> Optional[Tuple[str, Any]]:
        """The check's first setting as ``(x_key, value)``: the scalar its metrics record under the
        curve's x key (e.g. ``eps``), else the x of the first curve point (``accuracy`` is at the
        first setting by convention)."""
        key = self.curve_x_key(check_id)
        if key is None:
            return None
        for v in self.ok_variants:
            m = self.metrics(v).get(check_id) or {}
            if key in m and not isinstance(m[key], (list, dict)):
                return key, m[key]
        for v in self.ok_variants:
            k, pts = self.curve(v, check_id)
            if k == key:
                return key, pts[0][key]
        return None

    def check_params(self, check_id: str) -> Mapping[str, Any]:
        """The check's parameters as the recipe in results.json resolved them (empty if unknown)."""
        for c in self.recipe.get("evaluate") or []:
            if isinstance(c, Mapping) and str(c.get("id", c.get("check"))) == check_id:
                return c
        return {}

    def setting_text(self, check_id: str) -> str:
        """What a check's headline accuracy is measured at, e.g. ``"eps=0.1, linf, 20 steps"``,
        ``"10 flips"``, ``"BER=1e-04"``, ``"severity mean 1,3,5"``, ``"σ=0.25, radius 0"``."""
        metrics = [self.metrics(v).get(check_id) or {} for v in self.ok_variants]
        m = next((x for x in metrics if "accuracy" in x), {})
        params = self.check_params(check_id)
        s = self.setting(check_id)
        key, value = s if s else (None, None)
        parts: List[str] = []
        if key == "eps" or "eps" in m:
            eps = m.get("eps", value)
            if isinstance(eps, (int, float)):
                parts.append(f"eps={fmt_num(eps)}")
            if isinstance(m.get("norm") or params.get("norm"), str):
                parts.append(str(m.get("norm") or params.get("norm")))
            steps = params.get("steps")
            if isinstance(steps, int) and not m.get("gradient_free"):
                parts.append(f"{steps} steps")
            queries = params.get("n_queries")
            if isinstance(queries, int) and "square" in (params.get("attacks") or ()):
                parts.append(f"{queries} queries")
        elif key == "flips" or m.get("kind") == "fault" and "flips" in m:
            flips = m.get("flips", value)
            parts.append(f"{fmt_num(flips)} flip{'' if flips == 1 else 's'}")
        elif key == "ber" or "ber" in m:
            parts.append(f"BER={fmt_num(m.get('ber', value))}")
        elif key == "severity" or "severity" in m:
            sev = m.get("severity", value)
            parts.append(f"severity {sev}" if isinstance(sev, str) else f"severity {fmt_num(sev)}")
        elif key == "radius" or "sigma" in m:
            if isinstance(m.get("sigma"), (int, float)):
                parts.append(f"σ={fmt_num(m['sigma'])}")
            if key == "radius":
                parts.append(f"radius {fmt_num(value)}")
        elif key is not None:
            parts.append(f"{key}={fmt_num(value)}")
        budget = m.get("budget")
        if isinstance(budget, str) and budget and budget not in parts:
            parts.append(budget)
        return ", ".join(parts)

    def robust_setting(self) -> str:
        """The setting of the Robust column: the robust check's, else the shared eps of the
        attack checks that enter the minimum (``"min over pgd, cw"`` when they differ)."""
        if self.robust_id is not None and any(self.accuracy(v, self.robust_id) is not None for v in self.variants):
            return self.setting_text(self.robust_id)
        texts = list(dict.fromkeys(self.setting_text(c) for c in self.attack_ids))
        if len(texts) == 1:
            return texts[0]
        return "worst of " + ", ".join(self.attack_ids)

    def masked(self, variant: Mapping[str, Any], check_id: Optional[str]) -> bool:
        """Did this check raise a gradient-masking warning for this variant?"""
        if check_id is None:
            return False
        return any(is_masking_flag(f) for f in (self.metrics(variant).get(check_id) or {}).get("flags") or [])

    def robust_masked(self, variant: Mapping[str, Any]) -> bool:
        """Is the Robust value of this variant from a check that raised a masking warning?"""
        return self.masked(variant, self.robust(variant).source)

    def recipe_variant(self, name: str) -> Mapping[str, Any]:
        return next((v for v in self.recipe.get("variants") or [] if isinstance(v, Mapping) and v.get("name") == name),
                    {})

    def silent_fraction(self, variant: Mapping[str, Any]) -> Optional[float]:
        """The silent-weight diagnostic of a binary variant: the fraction of binary latent weights
        whose sign-flip average is below the threshold after its last training epoch (OvSW,
        arXiv 2407.05257); None when the method did not log it."""
        found = None
        for log in (variant.get("method_log") or {}).values():
            hist = log.get("history") if isinstance(log, Mapping) else None
            for h in hist or []:
                if isinstance(h, Mapping) and _num(h.get("binary_silent_fraction")):
                    found = h["binary_silent_fraction"]
        for h in variant.get("finetune_history") or []:
            if isinstance(h, Mapping) and _num(h.get("binary_silent_fraction")):
                found = h["binary_silent_fraction"]
        return found

    def flags(self) -> List[Tuple[str, Optional[str], str]]:
        """Every warning as ``(variant, check id or None, text)``, in variant then check order."""
        out = []
        for v in self.variants:
            for f in v.get("flags") or []:
                out.append((v["name"], None, f))
            m = self.metrics(v)
            for cid in self.check_ids:
                for f in (m.get(cid) or {}).get("flags") or []:
                    out.append((v["name"], cid, f))
        return out


def is_masking_flag(text: str) -> bool:
    """Does a warning report gradient masking (shown prominently)?"""
    t = text.lower()
    return "masking" in t or "obfuscat" in t
