"""Number formatting and display labels shared by tables, plots, markdown and HTML."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

DASH = "—"

#: display names of checks (by registered check name); unknown checks show their id
CHECK_LABELS = {
    "clean": "Clean", "pgd": "PGD", "fgsm": "FGSM", "apgd": "APGD", "cw": "C&W", "fab": "FAB", "square": "Square",
    "autoattack": "AutoAttack", "transfer": "Transfer attack", "robust": "Robust (worst case)",
    "bfa": "Bit-flip attack", "ber": "Bit-error rate", "random_flips": "Random bit flips",
    "faults": "Hardware faults", "corruptions": "Corruptions", "backdoor": "Backdoor",
    "certify": "Certified (smoothing)", "smoothing": "Certified (smoothing)",
}

#: axis labels of curve x keys
X_LABELS = {
    "eps": "perturbation budget ε", "flips": "bit flips", "ber": "bit-error rate", "severity": "corruption severity",
    "sigma": "noise σ", "radius": "certified radius", "rate": "rate", "bits": "bits", "steps": "attack steps",
    "sparsity": "sparsity",
}


def check_label(check_id: str, check_name: Optional[str] = None) -> str:
    """Display name of a check: its nice label, with the id when the id differs from the check name."""
    name = check_name or check_id
    label = CHECK_LABELS.get(name, name)
    return label if check_id == name or check_id == label else f"{label} [{check_id}]"


def x_label(key: str) -> str:
    return X_LABELS.get(key, key)


def fmt_bytes(n: Optional[float], digits: int = 1) -> str:
    """Human size in binary units: ``"812 B"``, ``"258.7 KiB"``, ``"1.3 MiB"``."""
    if n is None:
        return DASH
    n = float(n)
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if abs(n) >= scale:
            v = n / scale
            text = str(int(v)) if v == int(v) else f"{v:.{digits}f}"
            return f"{text} {unit}"
    return f"{n:.0f} B"


def fmt_int(n: Optional[int]) -> str:
    return DASH if n is None else f"{int(n):,}"


def fmt_pct(x: Optional[float]) -> str:
    """A fraction in [0, 1] as a percentage with one decimal: ``0.9916 -> "99.2%"``."""
    if x is None:
        return DASH
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{100.0 * x:.1f}%"


def fmt_ratio(r: Optional[float]) -> str:
    """A compression ratio: ``"7.07x"`` (two decimals below 100, none above)."""
    if r is None or (isinstance(r, float) and not math.isfinite(r)):
        return DASH
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"


def fmt_num(x: Any) -> str:
    """A parameter or setting: integers as is, floats with 4 significant digits, 8/255-style eps."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10000 else str(x)
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        k = x * 255
        if 0 < abs(x) < 1 and len(repr(x)) > 8 and abs(k - round(k)) < 1e-6:
            return f"{round(k)}/255"
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt_num(v) for v in x)
    if isinstance(x, Mapping):
        return ", ".join(f"{k}={fmt_num(v)}" for k, v in x.items())
    return str(x)


def fmt_bits(bits: Any) -> str:
    """Bit width: a number, or ``"mixed 4–8"`` for per-layer lists/mappings."""
    if bits is None:
        return DASH
    values = list(bits.values()) if isinstance(bits, Mapping) else bits if isinstance(bits, list) else None
    if values is None:
        return fmt_num(bits)
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return DASH
    lo, hi = min(nums), max(nums)
    return fmt_num(lo) if lo == hi else f"mixed {fmt_num(lo)}–{fmt_num(hi)}"


def _is_off(v: Any) -> bool:
    """Values that usually mean "feature off / default" and are left out of a short summary."""
    return v is None or v is False or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0) \
        or (isinstance(v, (list, tuple, Mapping)) and not v)


def fmt_params(params: Any, limit: Optional[int] = None) -> str:
    """Method parameters as ``key=value`` pairs; a ``steps`` list becomes ``a(...) + b(...)``.

    With ``limit``, only the first ``limit`` parameters that are not off (None, false, 0,
    empty) are shown, then ``…`` (per step for a ``steps`` list).
    """
    if not params:
        return ""
    if isinstance(params, Mapping) and isinstance(params.get("steps"), list):
        parts = []
        for s in params["steps"]:
            if isinstance(s, Mapping):
                rest = {k: v for k, v in s.items() if k != "method"}
                inner = fmt_params(rest, None if limit is None else max(1, limit - 1))
                parts.append(f"{s.get('method', '?')}({inner})" if inner else str(s.get("method", "?")))
            else:
                parts.append(fmt_num(s))
        others = {k: v for k, v in params.items() if k != "steps"}
        tail = fmt_params(others, limit)
        return " + ".join(parts) + (f"; {tail}" if tail else "")
    if isinstance(params, Mapping):
        items = [(k, v) for k, v in params.items() if v is not None]
        if limit is not None:
            on = [(k, v) for k, v in items if not _is_off(v)]
            items, more = on[:limit], len(on) > limit
        else:
            more = False
        return ", ".join(f"{k}={fmt_num(v)}" for k, v in items) + (", …" if more else "")
    return fmt_num(params)


def fmt_method(method: Optional[str], params: Any, limit: Optional[int] = None) -> str:
    """``"prune.global_magnitude (sparsity=0.9)"``; ``"dense"`` for no method (see :func:`fmt_params`)."""
    p = fmt_params(params, limit)
    if not method:
        return f"dense ({p})" if p else "dense"
    if isinstance(params, Mapping) and isinstance(params.get("steps"), list):
        return p
    return f"{method} ({p})" if p else method


def fmt_seconds(s: Optional[float]) -> str:
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(s, 60)
    if m < 60:
        return f"{int(m)} min {sec:.0f} s"
    h, m = divmod(m, 60)
    return f"{int(h)} h {int(m)} min"


def _component(c: Any) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(name, params)`` of a component as results.json stores it: ``{method|name: x, ...params}``
    or ``{name: x, params: {...}}``."""
    if isinstance(c, str):
        return c, {}
    if not isinstance(c, Mapping):
        return None, {}
    name = c.get("method", c.get("name"))
    if isinstance(c.get("params"), Mapping) and set(c) <= {"name", "method", "params"}:
        return name, dict(c["params"])
    return name, {k: v for k, v in c.items() if k not in ("method", "name")}


def method_steps(method: Optional[str], params: Any, variant_spec: Optional[Mapping[str, Any]] = None,
                 limit: Optional[int] = 3) -> Tuple[str, str]:
    """A variant's method as ``(steps, details)``: every step that made it, in order, and
    their parameters, e.g. ``("prune.global_magnitude → adversarial fine-tuning (pgd)",
    "sparsity=0.9; fine-tuning: 10 epochs, lr=0.02, pgd eps=0.1, steps=5")``.

    ``variant_spec`` is the variant's entry of the resolved recipe (fine-tuning lives there);
    ``limit`` parameters per step that are not off are shown (None: all).
    """
    names: List[str] = []
    details: List[str] = []
    if isinstance(params, Mapping) and isinstance(params.get("steps"), list):
        for s in params["steps"]:
            name, p = _component(s)
            names.append(str(name or "?"))
            text = fmt_params(p, limit)
            if text:
                details.append(f"{name}: {text}")
    elif method:
        names.append(method)
        text = fmt_params(params, limit)
        if text:
            details.append(text)
    spec = variant_spec or {}
    ft = spec.get("finetune") if isinstance(spec.get("finetune"), Mapping) else {}
    epochs = spec.get("finetune_epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
        adv_name, adv = _component(ft.get("adversarial")) if ft.get("adversarial") else (None, {})
        names.append(f"adversarial fine-tuning ({adv_name})" if adv_name else "fine-tuning")
        parts = [f"{epochs} epoch{'' if epochs == 1 else 's'}"]
        if isinstance(ft.get("lr"), (int, float)):
            parts.append(f"lr={fmt_num(ft['lr'])}")
        if adv_name:
            a = fmt_params({k: adv[k] for k in ("eps", "steps", "norm") if k in adv} or adv, limit)
            parts.append(f"{adv_name} {a}".strip())
        details.append("fine-tuning: " + ", ".join(parts))
    if not names:
        return "dense", "; ".join(details)
    return " → ".join(names), "; ".join(details)
