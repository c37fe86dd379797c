"""Read and validate ``results.json`` (schema version 1).

The report is rendered from this file alone. Validation is structural: every field the
report reads is checked for its type (and accuracies for the range [0, 1]); a problem
raises ``ValueError`` naming the file and the field path, e.g.
``results.json: field 'variants[1].metrics.pgd.accuracy' must be a number, got str 'high'``.
Fields the report does not use are left alone, so later issues can add more.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Tuple, Union

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"

#: curve keys that hold y values or statistics, never the x value
Y_KEYS = ("accuracy", "std", "trials", "loss", "samples", "seconds")


def results_path(run: Union[str, Path]) -> Path:
    """``run`` itself if it is a file, else ``run/results.json``."""
    p = Path(run)
    return p if p.is_file() or p.suffix == ".json" else p / RESULTS_FILE


def load_results(run: Union[str, Path]) -> dict:
    """Load and validate ``results.json`` from a run folder (or the file itself).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON, or a field is missing or malformed.
    """
    path = results_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results file (a run folder holds {RESULTS_FILE})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    return validate_results(data, source=str(path))


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> None:
        raise ValueError(f"{self.source}: field '{where}' {msg}")

    def get(self, obj: Mapping, key: str, where: str, kinds: Tuple[str, ...], required: bool = False) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in obj:
            if required:
                self.fail(path, "is missing")
            return None
        self.kind(obj[key], path, kinds)
        return obj[key]

    def kind(self, value: Any, where: str, kinds: Tuple[str, ...]) -> None:
        if any(_is(value, k) for k in kinds):
            return
        self.fail(where, f"must be {' or '.join(_NAMES[k] for k in kinds)}, got {_describe(value)}")

    def fraction(self, value: Any, where: str) -> None:
        self.kind(value, where, ("num",))
        if not math.isnan(value) and not 0.0 <= value <= 1.0:
            self.fail(where, f"must lie in [0, 1], got {value!r}")


_NAMES = {"str": "a string", "int": "an integer", "num": "a number", "map": "a mapping", "list": "a list",
          "none": "null", "bool": "true/false", "scalar": "a number or string"}


def _is(v: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "num":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "map":
        return isinstance(v, Mapping)
    if kind == "list":
        return isinstance(v, list)
    if kind == "none":
        return v is None
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "scalar":
        return _is(v, "num") or isinstance(v, str)
    raise AssertionError(kind)


def _describe(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def curve_x_key(point: Mapping[str, Any]) -> str:
    """The x key of a curve point: its first key that is not a y value or statistic.

    E.g. ``{"ber": 1e-5, "accuracy": 0.9, "std": 0.01, "trials": 5, "flips": 3.2}`` -> ``"ber"``
    (checks write the x key first; alphabetical order gives the same answer for the built-in checks).
    """
    keys = [k for k in point if k not in Y_KEYS and not k.endswith("accuracy") and not k.endswith("_std")]
    if not keys:
        raise ValueError("curve point has no x key")
    return keys[0]


def _check_metrics(c: _Checker, metrics: Mapping, where: str) -> None:
    failed = c.get(metrics, "error", where, ("str", "none")) is not None
    acc = c.get(metrics, "accuracy", where, ("num",), required=not failed)
    if acc is not None:
        c.fraction(acc, f"{where}.accuracy")
    c.get(metrics, "per_sample", where, ("str", "list"))
    flags = c.get(metrics, "flags", where, ("list",)) or []
    for i, f in enumerate(flags):
        c.kind(f, f"{where}.flags[{i}]", ("str",))
    curve = c.get(metrics, "curve", where, ("list",))
    if not curve:
        return
    x_key = None
    for i, p in enumerate(curve):
        pw = f"{where}.curve[{i}]"
        c.kind(p, pw, ("map",))
        c.fraction(c.get(p, "accuracy", pw, ("num",), required=True), f"{pw}.accuracy")
        if x_key is None:
            try:
                x_key = curve_x_key(p)
            except ValueError:
                c.fail(pw, "needs an x key (such as eps, flips, ber) besides 'accuracy'")
        c.get(p, x_key, pw, ("scalar",), required=True)


def _check_history(c: _Checker, hist: Any, where: str) -> None:
    for i, h in enumerate(hist or []):
        hw = f"{where}[{i}]"
        c.kind(h, hw, ("map",))
        c.get(h, "epoch", hw, ("num",), required=True)
        for k, v in h.items():
            if k != "epoch":
                c.kind(v, f"{hw}.{k}", ("num", "none", "str"))


def _check_variant(c: _Checker, v: Any, where: str) -> None:
    c.kind(v, where, ("map",))
    c.get(v, "name", where, ("str",), required=True)
    status = c.get(v, "status", where, ("str",), required=True)
    c.get(v, "method", where, ("str", "none"))
    c.get(v, "params", where, ("map", "none"))
    c.get(v, "error", where, ("str", "none"))
    size = c.get(v, "size_bytes", where, ("int", "none"), required=status == "ok")
    if size is not None and size <= 0:
        c.fail(f"{where}.size_bytes", f"must be a positive number of bytes, got {size!r}")
    if status == "ok" and size is None:
        c.fail(f"{where}.size_bytes", "must be set for a variant with status 'ok'")
    c.get(v, "dense_size_bytes", where, ("int", "none"))
    c.get(v, "compression_ratio", where, ("num", "none"))
    sp = c.get(v, "sparsity", where, ("num", "none"))
    if sp is not None:
        c.fraction(sp, f"{where}.sparsity")
    c.get(v, "bits", where, ("num", "str", "list", "map", "none"))
    c.get(v, "params_count", where, ("int", "none"))
    secs = c.get(v, "seconds", where, ("map", "none")) or {}
    for k, s in secs.items():
        c.kind(s, f"{where}.seconds.{k}", ("num", "none"))
    _check_history(c, c.get(v, "finetune_history", where, ("list", "none")), f"{where}.finetune_history")
    flags = c.get(v, "flags", where, ("list", "none")) or []
    for i, f in enumerate(flags):
        c.kind(f, f"{where}.flags[{i}]", ("str",))
    metrics = c.get(v, "metrics", where, ("map", "none")) or {}
    for cid, m in metrics.items():
        mw = f"{where}.metrics.{cid}"
        c.kind(m, mw, ("map",))
        _check_metrics(c, m, mw)


def validate_results(results: Any, source: str = RESULTS_FILE) -> dict:
    """Check the fields the report reads; return ``results`` unchanged.

    Raises:
        ValueError: naming ``source`` and the offending field.
    """
    c = _Checker(source)
    if not isinstance(results, Mapping):
        raise ValueError(f"{source}: must hold a JSON object, got {type(results).__name__}")
    schema = c.get(results, "schema", "", ("int",), required=True)
    if schema != SCHEMA_VERSION:
        c.fail("schema", f"is {schema}, but this sturdynet reads schema {SCHEMA_VERSION}")
    c.get(results, "name", "", ("str",), required=True)
    c.get(results, "recipe", "", ("map", "none"))
    c.get(results, "seed", "", ("int", "none"))
    for key in ("versions", "machine", "data"):
        c.get(results, key, "", ("map", "none"))
    c.get(results, "git_commit", "", ("str", "none"))
    for key in ("started", "updated"):
        c.get(results, key, "", ("str", "none"))
    base = c.get(results, "base", "", ("map", "none")) or {}
    c.get(base, "seconds", "base", ("num", "none"))
    _check_history(c, c.get(base, "history", "base", ("list", "none")), "base.history")
    variants = c.get(results, "variants", "", ("list",), required=True)
    seen = set()
    for i, v in enumerate(variants):
        _check_variant(c, v, f"variants[{i}]")
        if v["name"] in seen:
            c.fail(f"variants[{i}].name", f"repeats the variant name {v['name']!r}")
        seen.add(v["name"])
    return dict(results)
