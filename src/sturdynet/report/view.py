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

from .format import check_label
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
