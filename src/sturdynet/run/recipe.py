"""The recipe: what to train, which compressed variants to build, which checks to run.

Shape (YAML)::

    name: digits-demo
    seed: 0
    data: {name: digits}
    model: {name: small_cnn}                  # or torchvision.<name>, timm.<name>, factory: "pkg.mod:fn";
                                              # weights: state_dict.pt (then train: may be omitted),
                                              # input_normalization: {mean: [...], std: [...]}
    train: {epochs: 15, batch_size: 64, lr: 0.05}
    variants:
      - {name: dense}
      - {name: pruned-90, method: prune.global_magnitude, sparsity: 0.9, finetune_epochs: 3}
      - {name: int4, method: quant.uniform, bits: 4}
      - name: pruned-int4                     # several methods, applied in order
        steps: [{method: prune.global_magnitude, sparsity: 0.8}, {method: quant.uniform, bits: 4}]
    evaluate:
      - {check: clean}
      - {check: pgd, eps: 0.1, steps: 20}

A variant's method parameters sit beside ``name`` and ``method``; ``finetune_epochs``
fine-tunes after the method (at a tenth of the base learning rate unless
``finetune: {lr: ...}`` says otherwise; any training field can be overridden there).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

from ..core.params import MAX_INT, Component, ConfigError, component, from_dict, load_yaml, to_dict
from ..core.names import nearest_hint, safe_name
from ..core.registry import CHECKS, DATASETS, METHODS
from ..models.spec import ModelSpec, parse_model_spec
from ..train.config import TrainConfig, finetune_config

if TYPE_CHECKING:  # pragma: no cover
    from .sweep import Sweep

#: seeds feed torch, numpy and per-variant offsets (+ < 100000): keep them in 31 bits
MAX_SEED = 2 ** 31 - 1

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "default.yaml"


@dataclass(frozen=True)
class VariantSpec:
    """One compressed (or dense) variant of the base model."""

    name: str
    steps: Tuple[Component, ...] = ()
    finetune_epochs: int = 0
    finetune: Optional[TrainConfig] = None

    @property
    def method(self) -> Optional[str]:
        """The method name, methods joined with '+' when there are several, None for dense."""
        return "+".join(s.name for s in self.steps) or None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name}
        if len(self.steps) == 1:
            out.update(self.steps[0].to_dict("method"))
        elif self.steps:
            out["steps"] = [s.to_dict("method") for s in self.steps]
        out["finetune_epochs"] = self.finetune_epochs
        if self.finetune is not None:
            out["finetune"] = to_dict(self.finetune)
        return out


@dataclass(frozen=True)
class CheckSpec:
    """One evaluation check; ``id`` keys its metrics (defaults to the check name)."""

    id: str
    check: Component


@dataclass(frozen=True)
class Recipe:
    """A whole run, validated."""

    name: str
    seed: int
    data: Component
    model: ModelSpec
    train: TrainConfig
    variants: Tuple[VariantSpec, ...]
    evaluate: Tuple[CheckSpec, ...]
    device: str = "auto"
    sweep: Optional["Sweep"] = None
    retries: int = 0
    #: variants after the sweep grid's expansion (the declared ones without a grid)
    expanded: Tuple[VariantSpec, ...] = field(default=(), compare=False)
    #: the mapping this recipe was parsed from (sweep workers in other processes parse it again)
    source: Optional[Mapping[str, Any]] = field(default=None, compare=False, repr=False)

    @property
    def seeds(self) -> Tuple[int, ...]:
        """The base-model seeds: ``sweep.seeds``, else ``(seed,)``."""
        return self.sweep.seeds if self.sweep is not None else (self.seed,)

    @property
    def all_variants(self) -> Tuple[VariantSpec, ...]:
        """Every variant a run builds (grid expanded), in order."""
        return self.expanded or self.variants

    def cells(self) -> list:
        """Every (seed, variant) cell of the run, seed-major."""
        from .sweep import cells_of

        return cells_of(self.seeds, [v.name for v in self.all_variants])

    def to_dict(self) -> Dict[str, Any]:
        extra: Dict[str, Any] = {}
        if self.sweep is not None:
            extra["sweep"] = self.sweep.to_dict()
        if self.retries:
            extra["retries"] = self.retries
        return {
            "name": self.name,
            "seed": self.seed,
            "device": self.device,
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "train": to_dict(self.train),
            "variants": [v.to_dict() for v in self.variants],
            "evaluate": [{"check": c.check.name, **({"id": c.id} if c.id != c.check.name else {}),
                          **to_dict(c.check.kwargs())} for c in self.evaluate],
            **extra,
        }


_VARIANT_KEYS = ("name", "method", "steps", "finetune_epochs", "finetune")
_TOP_KEYS = ("name", "seed", "device", "data", "model", "train", "variants", "evaluate", "sweep", "retries")


def _variant(data: Any, path: str, base_train: TrainConfig) -> VariantSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"must be a mapping with a 'name', got {data!r}")
    if "name" not in data:
        raise ConfigError(f"{path}.name", "is required (a non-empty string)")
    name = safe_name(data["name"], f"{path}.name")
    method = data.get("method")
    params = {k: v for k, v in data.items() if k not in _VARIANT_KEYS}
    if "steps" in data:
        if method is not None or params:
            raise ConfigError(f"{path}.steps", "give either 'steps' or one 'method' with its parameters, not both")
        steps_raw = data["steps"]
        if not isinstance(steps_raw, (list, tuple)) or not steps_raw:
            raise ConfigError(f"{path}.steps", "must be a non-empty list of {method: ..., ...}")
        steps = tuple(component(METHODS, s, f"{path}.steps[{i}]", key="method") for i, s in enumerate(steps_raw))
    elif method in (None, "none", "dense"):
        if params:
            raise ConfigError(f"{path}.{next(iter(params))}", "unknown key (a variant without a method takes no parameters)")
        steps = ()
    else:
        steps = (component(METHODS, {"method": method, **params}, path, key="method"),)
    ft_epochs = data.get("finetune_epochs", 0)
    if isinstance(ft_epochs, bool) or not isinstance(ft_epochs, int) or not 0 <= ft_epochs <= MAX_INT:
        raise ConfigError(f"{path}.finetune_epochs", f"must be an integer in [0, {MAX_INT}], got {ft_epochs!r}")
    ft = None
    if ft_epochs > 0 or data.get("finetune"):
        ft = finetune_config(base_train, ft_epochs, data.get("finetune"), f"{path}.finetune")
        ft_epochs = ft.epochs
    return VariantSpec(name=name, steps=steps, finetune_epochs=ft_epochs, finetune=ft)


def parse_check(data: Any, path: str) -> CheckSpec:
    if isinstance(data, str):
        data = {"check": data}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"must be a mapping with a 'check', got {data!r}")
    comp = component(CHECKS, data, path, key="check", reserved=("id",))
    cid = safe_name(data.get("id", comp.name), f"{path}.id")
    return CheckSpec(id=cid, check=comp)


def _list(data: Mapping[str, Any], key: str) -> list:
    value = data.get(key)
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(key, "must be a non-empty list")
    return list(value)


def parse_recipe(data: Any) -> Recipe:
    """Validate a recipe mapping (as read from YAML) into a :class:`Recipe`."""

    if not isinstance(data, Mapping):
        raise ConfigError("", f"a recipe must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(str(key), f"unknown key ({nearest_hint(key, _TOP_KEYS)})")
    name = safe_name(data.get("name", "recipe"), "name")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError("seed", f"must be an integer in [0, {MAX_SEED}], got {seed!r}")
    device = data.get("device", "auto")
    if not isinstance(device, str):
        raise ConfigError("device", f"must be a string such as auto, cpu or cuda, got {device!r}")
    if "data" not in data:
        raise ConfigError("data", "is required")
    if "model" not in data:
        raise ConfigError("model", "is required")
    dat = component(DATASETS, data["data"], "data")
    mod = parse_model_spec(data["model"], "model")
    train = from_dict(TrainConfig, data.get("train"), "train")
    variants = tuple(_variant(v, f"variants[{i}]", train) for i, v in enumerate(_list(data, "variants")))
    names = [v.name for v in variants]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"variants[{i}].name", f"duplicate variant name {n!r}")
    checks = tuple(parse_check(c, f"evaluate[{i}]") for i, c in enumerate(_list(data, "evaluate")))
    ids = [c.id for c in checks]
    for i, c in enumerate(ids):
        if c in ids[:i]:
            raise ConfigError(f"evaluate[{i}].id", f"duplicate check id {c!r}; give the second one an 'id'")
    sweep, expanded = None, ()
    if data.get("sweep") is not None:
        from .sweep import expand_variants, parse_sweep

        raw = _list(data, "variants")
        sweep = parse_sweep(data["sweep"], raw, seed)
        expanded = tuple(_variant(v, f"sweep: expanded variant {v.get('name')!r}", train)
                         for v in expand_variants(raw, sweep))
        all_names = [v.name for v in expanded]
        for n in all_names:
            if all_names.count(n) > 1:
                raise ConfigError("sweep.grid", f"expanded variant name {n!r} is also a declared variant's name")
    retries = data.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError("retries", f"must be an integer >= 0, got {retries!r}")
    return Recipe(name=name, seed=seed, data=dat, model=mod, train=train, variants=variants,
                  evaluate=checks, device=device, sweep=sweep, retries=retries, expanded=expanded,
                  source=copy.deepcopy(dict(data)))


def load_recipe(path: Optional[Union[str, Path]] = None) -> Recipe:
    """Load and validate a recipe file (the built-in default when ``path`` is None)."""
    return parse_recipe(load_yaml(path or DEFAULT_RECIPE))
