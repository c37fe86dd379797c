"""Sweeps: seeds and a parameter grid in the recipe, expanded to named cells.

Shape (YAML)::

    sweep:
      seeds: [0, 1, 2]
      grid: {variants.pruned.sparsity: [0.5, 0.8, 0.9], variants.q.bits: [8, 4, 2]}
    retries: 1          # a failed cell is run again this many times

A grid key ``variants.<name>.<field>`` replaces one field of the named variant (a method
parameter, ``finetune_epochs``, or ``steps.<i>.<field>`` of a multi-step variant). Keys on
the same variant combine as a Cartesian product; keys on different variants expand
independently (each cell holds one variant). An expanded variant is named
``<name>@<field>=<value>`` (fields joined with ``+``), e.g. ``pruned@sparsity=0.9`` — a
name that is also a safe file name. A cell is (base model of its seed, variant, checks):
``len(seeds) x len(expanded variants)`` cells in all.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.params import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@-]")


@dataclass(frozen=True)
class Sweep:
    """Validated ``sweep:`` section.

    Attributes:
        seeds: the base-model seeds (each seed trains its own base model).
        grid: ``(key, values)`` pairs as written, e.g. ``("variants.pruned.sparsity", (0.5, 0.9))``.
    """

    seeds: Tuple[int, ...]
    grid: Tuple[Tuple[str, Tuple[Any, ...]], ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"seeds": list(self.seeds), "grid": {k: list(v) for k, v in self.grid}}


@dataclass(frozen=True)
class Cell:
    """One unit of work: a variant (after grid expansion) on the base model of one seed."""

    seed: int
    variant: str

    @property
    def id(self) -> str:
        return f"{self.variant}#s{self.seed}"


def _fmt_value(v: Any) -> str:
    text = repr(v) if isinstance(v, float) else str(v)
    return _UNSAFE.sub("_", text).replace("..", "_")


def expanded_name(name: str, assignment: Sequence[Tuple[str, Any]]) -> str:
    """``pruned`` + ``[("sparsity", 0.9)]`` -> ``pruned@sparsity=0.9``."""
    return name + "@" + "+".join(f"{_UNSAFE.sub('_', f)}={_fmt_value(v)}" for f, v in assignment)


def _set_path(d: Dict[str, Any], field: str, value: Any, where: str) -> None:
    parts = field.split(".")
    obj: Any = d
    for i, p in enumerate(parts[:-1]):
        if isinstance(obj, list):
            if not p.isdigit() or int(p) >= len(obj):
                raise ConfigError(where, f"'{'.'.join(parts[:i + 1])}' is not an index of the variant's list")
            obj = obj[int(p)]
        elif isinstance(obj, dict):
            if p not in obj or not isinstance(obj[p], (dict, list)):
                raise ConfigError(where, f"the variant has no section '{'.'.join(parts[:i + 1])}'")
            obj = obj[p]
    last = parts[-1]
    if isinstance(obj, list):
        raise ConfigError(where, f"'{field}' names a list, not a field")
    if last == "name":
        raise ConfigError(where, "the variant's name cannot be swept")
    obj[last] = value


def parse_sweep(data: Any, variants_raw: Sequence[Mapping[str, Any]], default_seed: int) -> Sweep:
    """Validate the ``sweep:`` mapping against the recipe's (raw) variants."""
    if not isinstance(data, Mapping):
        raise ConfigError("sweep", f"must be a mapping with 'seeds' and/or 'grid', got {data!r}")
    for k in data:
        if k not in ("seeds", "grid"):
            raise ConfigError(f"sweep.{k}", "unknown key (known: seeds, grid)")
    seeds_raw = data.get("seeds", [default_seed])
    if not isinstance(seeds_raw, (list, tuple)) or not seeds_raw:
        raise ConfigError("sweep.seeds", f"must be a non-empty list of integers >= 0, got {seeds_raw!r}")
    for i, s in enumerate(seeds_raw):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"sweep.seeds[{i}]", f"must be an integer >= 0, got {s!r}")
    if len(set(seeds_raw)) != len(seeds_raw):
        raise ConfigError("sweep.seeds", f"repeats a seed: {list(seeds_raw)}")
    grid_raw = data.get("grid") or {}
    if not isinstance(grid_raw, Mapping):
        raise ConfigError("sweep.grid", "must be a mapping {variants.<name>.<field>: [values]}")
    names = [v.get("name") for v in variants_raw if isinstance(v, Mapping)]
    grid = []
    for key, values in grid_raw.items():
        where = f"sweep.grid.{key}"
        parts = str(key).split(".", 2)
        if len(parts) != 3 or parts[0] != "variants" or not parts[2]:
            raise ConfigError(where, "a grid key reads variants.<variant name>.<field>")
        if parts[1] not in names:
            raise ConfigError(where, f"no variant named {parts[1]!r} (variants: {', '.join(map(str, names))})")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(where, f"must be a non-empty list of values, got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(where, f"repeats a value: {list(values)}")
        grid.append((str(key), tuple(values)))
    return Sweep(seeds=tuple(seeds_raw), grid=tuple(grid))


def expand_variants(variants_raw: Sequence[Mapping[str, Any]], sweep: Optional[Sweep]) -> List[Dict[str, Any]]:
    """The raw variant mappings after grid expansion, in recipe order (grid order within a variant)."""
    by_variant: Dict[str, List[Tuple[str, str, Tuple[Any, ...]]]] = {}
    for key, values in (sweep.grid if sweep else ()):
        _, name, field = key.split(".", 2)
        by_variant.setdefault(name, []).append((key, field, values))
    out: List[Dict[str, Any]] = []
    for raw in variants_raw:
        axes = by_variant.get(raw.get("name"))
        if not axes:
            out.append(dict(raw))
            continue
        for combo in itertools.product(*[vals for _, _, vals in axes]):
            d = copy.deepcopy(dict(raw))
            for (key, field, _), value in zip(axes, combo):
                _set_path(d, field, value, f"sweep.grid.{key}")
            d["name"] = expanded_name(raw["name"], [(f, v) for (_, f, _), v in zip(axes, combo)])
            if len(d["name"]) > 100:
                raise ConfigError(f"sweep.grid.{axes[0][0]}", f"expanded variant name is too long: {d['name'][:60]}...")
            out.append(d)
    return out


def cells_of(seeds: Sequence[int], variant_names: Sequence[str]) -> List[Cell]:
    """Every cell, seed-major (all variants of the first seed first)."""
    return [Cell(s, n) for s in seeds for n in variant_names]
