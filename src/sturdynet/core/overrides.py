"""Command-line overrides of a recipe mapping: ``train.epochs=1``, ``variants[1].bits=4``.

An override is ``PATH=VALUE``. ``PATH`` is a dotted path with list indices in brackets;
an index is a position (``variants[1]``, negative counts from the end) or the ``name``
(``id`` or ``check``) of a list item (``variants[int4].bits=3``,
``evaluate[pgd].steps=50``). ``VALUE`` is read as YAML (``4`` is an integer,
``[0.1, 0.2]`` a list, ``8/255`` a string that float fields read as a fraction,
``null`` removes the key). Overrides edit the raw mapping; the recipe is then validated
as a whole, so a bad value is reported with its field path like any recipe error.
"""
from __future__ import annotations

import copy
import re
from typing import Any, List, Mapping, MutableMapping, Sequence, Tuple, Union

import yaml

from .params import ConfigError

_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[([^\[\]]*)\]")
_ITEM_KEYS = ("name", "id", "check", "method")


def parse_path(path: str, where: str = "--set") -> List[Union[str, int]]:
    """``"variants[1].bits"`` -> ``["variants", 1, "bits"]``; a name in brackets is kept as a
    string with a leading ``"["`` (``"variants[int4]"`` -> ``["variants", "[int4"]``)."""
    out: List[Union[str, int]] = []
    pos = 0
    path = path.strip()
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None or m.end() == pos or (m.group(1) is not None and pos > 0 and path[pos] != "."):
            raise ConfigError(where, f"cannot read the field path {path!r} (write e.g. train.epochs or "
                                     "variants[1].bits)")
        key, idx = m.group(1), m.group(2)
        if key is not None:
            out.append(key)
        else:
            idx = idx.strip()
            if not idx:
                raise ConfigError(where, f"empty index in {path!r}")
            out.append(int(idx) if re.fullmatch(r"-?\d+", idx) else "[" + idx)
        pos = m.end()
    if not out:
        raise ConfigError(where, "empty field path")
    return out


def _show(keys: Sequence[Union[str, int]]) -> str:
    text = ""
    for k in keys:
        if isinstance(k, int):
            text += f"[{k}]"
        elif k.startswith("["):
            text += f"{k}]"
        else:
            text += f".{k}" if text else k
    return text


def _find(items: list, key: Union[str, int], shown: str) -> int:
    if isinstance(key, int):
        if not -len(items) <= key < len(items):
            raise ConfigError(shown, f"index out of range (the list has {len(items)} item"
                                     f"{'' if len(items) == 1 else 's'})")
        return key % len(items)
    name = key[1:]
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and any(item.get(k) == name for k in _ITEM_KEYS):
            return i
        if item == name:
            return i
    known = [str(next((it[k] for k in _ITEM_KEYS if k in it), "?")) if isinstance(it, Mapping) else str(it)
             for it in items]
    raise ConfigError(shown, f"no item named {name!r} (items: {', '.join(known)})")


def set_path(data: MutableMapping[str, Any], path: str, value: Any, where: str = "--set") -> None:
    """Set ``value`` at ``path`` inside ``data`` (in place); missing mapping keys are created,
    ``None`` deletes the key (or the list item).

    Raises:
        ConfigError: naming the part of the path that does not exist or is not a mapping/list.
    """
    keys = parse_path(path, where)
    node: Any = data
    for depth, key in enumerate(keys):
        shown = _show(keys[:depth + 1])
        last = depth == len(keys) - 1
        if isinstance(key, int) or key.startswith("["):
            if not isinstance(node, list):
                raise ConfigError(_show(keys[:depth]) or where, "is not a list, cannot index it")
            i = _find(node, key, shown)
            if last:
                if value is None:
                    del node[i]
                else:
                    node[i] = value
                return
            if not isinstance(node[i], MutableMapping):
                raise ConfigError(shown, f"is {node[i]!r}, not a mapping; set the whole item instead")
            node = node[i]
            continue
        if not isinstance(node, MutableMapping):
            raise ConfigError(_show(keys[:depth]) or where, "is not a mapping")
        if last:
            if value is None:
                node.pop(key, None)
            else:
                node[key] = value
            return
        if node.get(key) is None:
            node[key] = {}
        node = node[key]


def parse_override(text: str) -> Tuple[str, Any]:
    """``"train.epochs=1"`` -> ``("train.epochs", 1)`` (the value read as YAML)."""
    if "=" not in text:
        raise ConfigError("--set", f"expected PATH=VALUE, got {text!r}")
    path, raw = text.split("=", 1)
    if not path.strip():
        raise ConfigError("--set", f"expected PATH=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {path.strip()}", f"value is not valid YAML: {raw!r}") from None
    return path.strip(), value


def apply_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """A deep copy of the recipe mapping ``data`` with every ``PATH=VALUE`` override applied, in order.

    Raises:
        ConfigError: an override is malformed or its path does not exist (named in the message).
    """
    if not overrides:
        return data
    if not isinstance(data, MutableMapping):
        raise ConfigError("", f"a recipe must be a mapping, got {type(data).__name__}")
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        set_path(out, path, value)
    return out
