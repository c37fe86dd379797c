"""Parameters: YAML and keyword arguments read into frozen dataclasses, with errors that name the field path.

A recipe has a fixed top level (:class:`Recipe`); the parameters of each component
(data set, model, compression method, check, callback) are validated against the
dataclass that the component registered, so a new method adds its own fields without
touching this module.

Field constraints live in ``dataclasses.field(metadata=...)``:
``range=(lo, hi)`` with ``bounds="[]"`` / ``"[)"`` / ``"(]"`` / ``"()"``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Literal, Mapping, Optional, Tuple, Union

import yaml

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry



#: recipe numbers beyond these are typos or attacks (1e12 epochs, eps 1e308), never settings
MAX_INT = 10 ** 9
MAX_FLOAT = 1e30


class ConfigError(ValueError):
    """A bad recipe value; ``str(err)`` is ``"<field path>: <what is wrong>"``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = " ".join(str(message).splitlines())  # always one line
        super().__init__(f"{path}: {message}" if path else message)


def rng(lo: Optional[float] = None, hi: Optional[float] = None, bounds: str = "[]", inf: bool = False,
        **kw: Any) -> Any:
    """A dataclass field with a numeric range, e.g. ``sparsity: float = rng(0, 1, "[)")``.

    Numbers must be finite unless ``inf=True`` (an attack's ``eps = inf``: no bound).
    """
    meta = {"range": (lo, hi, bounds), "inf": inf}
    return field(metadata=meta, **kw)


def _check_finite(f: dataclasses.Field, value: Any, path: str) -> None:
    if f.metadata.get("inf"):
        return
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, float) and math.isinf(v):
            raise ConfigError(path, f"must be a finite number, got {v}")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "list of " + _type_name(typing.get_args(tp)[0])
    return getattr(tp, "__name__", str(tp))


_FRACTION = re.compile(r"\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*")


def parse_number(text: str) -> Optional[float]:
    """A float from ``"1e-3"``, ``"0.5"`` or a fraction ``"8/255"`` (None if it is neither).

    >>> parse_number("8/255") == 8 / 255
    True
    """
    try:
        return float(text)
    except ValueError:
        pass
    m = _FRACTION.fullmatch(text)
    if m is None:
        return None
    try:
        num, den = float(m.group(1)), float(m.group(2))
    except ValueError:
        return None
    return num / den if den != 0 else None


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against type ``tp``; return it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, (list, tuple)) and not value and any(
                typing.get_origin(a) in (tuple, list) for a in args) and any(a in (int, float) for a in args):
            raise ConfigError(path, "must be a number or a non-empty list of numbers, got []")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(path, f"must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and all(isinstance(c, str) for c in choices):
            # YAML 1.1 reads unquoted true/false/yes/no/on/off as booleans: ``grad_mode: true``
            # means the choice "true"; a boolean that names no choice gets a clear message.
            word = "true" if value else "false"
            if word in choices:
                return word
            raise ConfigError(path, f"must be one of {', '.join(map(str, choices))}; got the boolean {word} "
                                    "(YAML reads unquoted true/false/yes/no/on/off as booleans; quote the value)")
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, v, _join(path, i)) for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {value!r}")
        if abs(value) > MAX_INT:
            raise ConfigError(path, f"must be at most {MAX_INT:.0e} in magnitude, got {value}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 1e-3 (no dot) and 8/255 as strings: accept numbers and fractions.
            if isinstance(value, str):
                number = parse_number(value)
                if number is None:
                    raise ConfigError(path, f"must be a number (or a fraction such as 8/255), got {value!r}")
                value = number
            else:
                raise ConfigError(path, f"must be a number (or a fraction such as 8/255), got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(path, f"must be a finite number at most {MAX_FLOAT:.0e} in magnitude") from None
        if math.isnan(value):
            raise ConfigError(path, "must be a number, got NaN")
        if math.isinf(value):
            return value  # refused by from_dict unless the field declares rng(..., inf=True)
        if abs(value) > MAX_FLOAT:
            raise ConfigError(path, f"must be at most {MAX_FLOAT:.0e} in magnitude, got {value:g}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {value!r}")
        return value
    return value


def _check_range(f: dataclasses.Field, value: Any, path: str) -> None:
    spec = f.metadata.get("range")
    if spec is None or value is None:
        return
    lo, hi, bounds = spec
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        ok_lo = lo is None or (v >= lo if bounds[0] == "[" else v > lo)
        ok_hi = hi is None or (v <= hi if bounds[1] == "]" else v < hi)
        if not (ok_lo and ok_hi):
            if hi is None:
                want = f"must be {'>=' if bounds[0] == '[' else '>'} {lo}"
            elif lo is None:
                want = f"must be {'<=' if bounds[1] == ']' else '<'} {hi}"
            else:
                want = f"must be in {bounds[0]}{lo}, {hi}{bounds[1]}"
            raise ConfigError(path, f"{want}, got {v}")


def rename_keys(data: Mapping[str, Any], aliases: Mapping[str, str], path: str = "") -> Dict[str, Any]:
    """``data`` with alternative key spellings (``aliases``: other -> canonical) renamed;
    a key given under both spellings is an error naming both."""
    out = dict(data)
    for old, new in aliases.items():
        if old in out:
            if new in out:
                raise ConfigError(_join(path, old), f"given twice (as {old!r} and {new!r})")
            out[new] = out.pop(old)
    return out


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and ranges.

    Raises:
        ConfigError: naming the first offending field path.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            from .names import nearest_hint

            raise ConfigError(_join(path, key), f"unknown key ({nearest_hint(key, fields, 'see the docs')})")
    kwargs = {}
    for name, f in fields.items():
        fpath = _join(path, name)
        if name in data:
            parse = f.metadata.get("parse")
            value = parse(data[name], fpath) if parse else _convert(hints[name], data[name], fpath)
            _check_finite(f, value, fpath)
            _check_range(f, value, fpath)
            kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(fpath, "is required")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(_join(path, e.path) if e.path else path, e.message) from None
    except ValueError as e:
        raise ConfigError(path, str(e)) from None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list structure (tuples become lists) for JSON/YAML.

    A :class:`Component` is written the way a recipe names it (``{name: ..., **params}``, or
    ``{method: ...}`` for components parsed with that key), so the output parses back."""
    if isinstance(obj, Component):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def kwargs_of(params: Any) -> Dict[str, Any]:
    """A parameter dataclass instance as keyword arguments (empty for None)."""
    if params is None:
        return {}
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


@dataclass(frozen=True)
class Component:
    """A registered component: its name plus its validated parameter dataclass."""

    name: str
    params: Any = None
    key: str = field(default="name", compare=False, repr=False)  # the key that names it in a recipe

    def kwargs(self) -> Dict[str, Any]:
        """The parameters as keyword arguments (empty when the component has none)."""
        return kwargs_of(self.params)

    def to_dict(self, key: Optional[str] = None) -> Dict[str, Any]:
        return {key or self.key: self.name, **to_dict(self.kwargs())}


def component(registry: "Registry", data: Any, path: str, key: str = "name",
              reserved: Tuple[str, ...] = ()) -> Component:
    """Validate ``{key: <registered name>, **params}`` against ``registry``.

    Keys listed in ``reserved`` are ignored here (the caller reads them).
    """
    if isinstance(data, str):
        data = {key: data}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"must be a mapping with a '{key}', got {data!r}")
    if key not in data:
        raise ConfigError(_join(path, key), "is required")
    name = data[key]
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(_join(path, key), registry.unknown(name))
    rest = {k: v for k, v in data.items() if k != key and k not in reserved}
    return Component(name, registry.validate(name, rest, path), key)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (YAML says keys are
    unique; PyYAML would silently keep the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: Dict[Any, int] = {}
    for key_node, _ in node.value:  # before merging ``<<`` keys, which may be overridden
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        except TypeError:  # an unhashable key (a list): the constructor refuses it
            continue
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str = "") -> Any:
    """YAML text -> data (safe types only, duplicate keys refused); errors are one-line ConfigErrors
    naming ``source`` and the line."""
    where = f"{source}: " if source else ""
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise ConfigError("", f"{where}not valid YAML (line {line}): NUL byte")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError("", f"{where}not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError("", f"{where}not valid YAML: nested too deeply") from None


def load_yaml(path: Union[str, Path]) -> Any:
    """Read a UTF-8 YAML file, turning I/O, encoding and syntax problems into one-line ConfigErrors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"recipe file not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError("", f"{p}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError("", f"{p}: not UTF-8 text (byte {e.start}, line {line})") from None
    return parse_yaml(text, str(p))
