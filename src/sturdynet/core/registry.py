"""Name -> factory registries, in the style of timm's ``create_model``.

Every family (data sets, models, compression methods, checks, attacks, training
callbacks, fault models, corruptions) owns one :class:`Registry`, and every registry
follows one convention:

- ``@REG.register("name", params=ParamsDataclass)`` adds an entry; a name can be
  registered once, so two files can never silently shadow each other.
- ``REG.create(name, *args, **params)`` validates ``params`` against the entry's
  parameter dataclass (unknown keys, types, ranges: :func:`sturdynet.core.params.from_dict`,
  errors name ``<kind> '<name>'.<field>``) and builds the entry with the family's
  calling convention (declared once, below).
- ``REG.names("glob*")`` lists, ``REG.get(name)`` returns the entry, ``REG.params(name)``
  its parameter dataclass.
- ``register(..., aliases={"other-name": {"field": value}})`` adds other spellings of an
  entry (with fixed parameters); an entry may declare ``param_aliases = {"old": "new"}``
  (a class attribute) for other spellings of its parameters. :meth:`Registry.create`
  accepts both; ``names()`` lists only the canonical names.

A registry knows the packages that hold its built-in entries and imports them the first
time it is asked anything, so no ``import sturdynet.plugins`` is needed and an empty
registry never answers "available: none". The import is by module name at run time
(``importlib``), so core/ keeps importing no family.
"""
from __future__ import annotations

import fnmatch
import importlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .names import nearest_hint
from .params import ConfigError, from_dict, kwargs_of, rename_keys

Build = Callable[..., Any]


def _kwargs(entry: Any, params: Any, *args: Any) -> Any:
    return entry(*args, **kwargs_of(params))


class Registry:
    """A named collection of factories.

    Args:
        kind: what the entries are ("model", "data set", ...), used in error messages.
        home: modules whose import registers the built-in entries.
        build: ``build(entry, params, *args)`` calls an entry with its validated
            parameters (``params`` is the dataclass instance, or None when the entry
            declares none); the default passes the fields as keyword arguments.
    """

    def __init__(self, kind: str, home: Sequence[str] = (), build: Build = _kwargs) -> None:
        self.kind = kind
        self.home = tuple(home)
        self.build = build
        self._entries: Dict[str, Any] = {}
        self._params: Dict[str, Optional[type]] = {}
        self._aliases: Dict[str, Tuple[str, Dict[str, Any]]] = {}
        self._sources: List[Callable[[], Any]] = []
        self._loaded = not self.home

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: a home module may ask the registry while it loads
            for mod in self.home:
                importlib.import_module(mod)

    def add_source(self, source: Callable[[], Any]) -> None:
        """``source()`` registers entries derived from elsewhere (e.g. one check per attack);
        it runs now and again whenever a name is missed or the names are listed, so entries
        registered later elsewhere still appear."""
        self._sources.append(source)
        source()

    def registered(self, name: str) -> bool:
        """Is ``name`` registered now (no import, no sources asked)?"""
        return name in self._entries

    def _refresh(self) -> None:
        for source in self._sources:
            source()

    def register(self, name: str, params: Optional[type] = None,
                 aliases: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Callable[[Any], Any]:
        """Decorator that records ``obj`` under ``name``.

        Args:
            name: the public name (used in recipes and on the command line).
            params: frozen dataclass describing the entry's parameters; recipes,
                :meth:`create` and the command line validate user input against it.
            aliases: other names of the entry, each with the parameters it fixes
                (e.g. ``{"apgd-ce": {"loss": "ce"}}``).
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string")

        def deco(obj: Any) -> Any:
            for n in (name, *(aliases or {})):
                if n in self._entries or n in self._aliases:
                    raise ValueError(f"{self.kind} '{n}' is already registered")
            self._entries[name] = obj
            self._params[name] = params
            for a, fixed in (aliases or {}).items():
                self._aliases[a] = (name, dict(fixed))
            return obj

        return deco

    def unknown(self, name: Any) -> str:
        """``unknown <kind> 'x'`` plus the nearest registered names (one line)."""
        return f"unknown {self.kind} {name!r} ({nearest_hint(name, self.names())})"

    def get(self, name: str) -> Any:
        """Return the registered object, or raise a ValueError naming the nearest names."""
        self._load()
        if isinstance(name, str) and name not in self._entries and self._sources:
            self._refresh()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(self.unknown(name)) from None

    def resolve(self, name: str) -> Tuple[str, Dict[str, Any]]:
        """``(canonical name, fixed parameters)`` of a name or alias (unknown: ValueError)."""
        self._load()
        if isinstance(name, str) and name in self._aliases:
            target, fixed = self._aliases[name]
            return target, dict(fixed)
        self.get(name)
        return name, {}

    def aliases(self) -> Dict[str, Tuple[str, Dict[str, Any]]]:
        """Every alias -> (canonical name, fixed parameters)."""
        self._load()
        return {k: (n, dict(f)) for k, (n, f) in self._aliases.items()}

    def _params_for(self, name: str, params: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
        """Resolve an alias and the entry's parameter spellings; fixed values may not be overridden."""
        target, fixed = self.resolve(name)
        params = rename_keys(params, getattr(self._entries[target], "param_aliases", None) or {},
                             f"{self.kind} '{name}'")
        for k, v in fixed.items():
            if k in params and params[k] != v:
                raise ConfigError(f"{self.kind} '{name}'.{k}", f"is fixed to {v!r} by the name {name!r}")
        return target, {**params, **fixed}

    def params(self, name: str) -> Optional[type]:
        """The parameter dataclass registered with ``name`` (None if it takes none)."""
        self.get(name)
        return self._params[name]

    def validate(self, name: str, params: Any = None, path: Optional[str] = None) -> Any:
        """``params`` (a mapping) checked against the entry's dataclass -> an instance (or None)."""
        pcls = self.params(name)
        path = f"{self.kind} '{name}'" if path is None else path
        if pcls is None:
            if params:
                raise ConfigError(f"{path}.{next(iter(params))}", f"unknown key ({self.kind} '{name}' takes no parameters)")
            return None
        if isinstance(params, pcls):
            return params
        return from_dict(pcls, params, path)

    def create(self, name: str, *args: Any, **params: Any) -> Any:
        """Validate ``params`` and build the entry registered under ``name`` (or an alias)."""
        name, params = self._params_for(name, params)
        return self.build(self.get(name), self.validate(name, params), *args)

    def create_from(self, comp: Any, *args: Any) -> Any:
        """Build an already validated :class:`~sturdynet.core.params.Component` (a recipe's)."""
        return self.build(self.get(comp.name), self.validate(comp.name, comp.params), *args)

    def names(self, pattern: str = "*") -> List[str]:
        """Sorted names matching a shell-style glob."""
        self._load()
        self._refresh()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._load()
        if name not in self._entries:
            self._refresh()
        return name in self._entries

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __iter__(self):
        return iter(self.names())


def _object(entry: Any, params: Any, *args: Any) -> Any:
    """Entries that take the parameter object: ``entry(params, *args)``."""
    return entry(params, *args)


def _check(entry: Any, params: Any, model: Any, data: Any, ctx: Any) -> Any:
    """Checks run at once: ``check(model, data, params, ctx) -> metrics``."""
    return entry(model, data, params, ctx)


def _method(entry: Any, params: Any, model: Any, ctx: Any = None) -> Any:
    """Compression methods transform a model: ``entry().apply(model, params, ctx) -> new model``."""
    return entry().apply(model, params, ctx)


def _model(entry: Any, params: Any, in_channels: int, num_classes: int, input_size: Any,
           mean: Any, std: Any) -> Any:
    """Models take the data facts beside their own parameters."""
    return entry(in_channels=in_channels, num_classes=num_classes, input_size=tuple(input_size),
                 mean=tuple(mean), std=tuple(std), **kwargs_of(params))


def _plain(entry: Any, params: Any, *args: Any) -> Any:
    """Entries without parameters: ``entry(*args)``."""
    return entry(*args)


_METHOD_HOMES = ("sturdynet.prune", "sturdynet.quant", "sturdynet.defenses")

DATASETS = Registry("data set", ("sturdynet.data",), build=_object)  # create(name, seed, **params) -> DataBundle
MODELS = Registry("model", ("sturdynet.models",), build=_model)  # create(name, in_ch, classes, size, mean, std, **p)
METHODS = Registry("compression method", _METHOD_HOMES, build=_method)  # create(name, model, ctx, **params)
CHECKS = Registry("check", ("sturdynet.checks",), build=_check)  # create(name, model, data, ctx, **params)
ATTACKS = Registry("attack", ("sturdynet.attacks",))  # create(name, model, **params) -> Attack
CALLBACKS = Registry("training callback", _METHOD_HOMES + ("sturdynet.train",))  # create(name, **params)
ADVERSARIAL = Registry("adversarial training method", ("sturdynet.defenses.adversarial",))
FAULTS = Registry("fault model", ("sturdynet.faults",))  # create(name, **params) -> fault model
CORRUPTIONS = Registry("corruption", ("sturdynet.corruptions",), build=_plain)  # create(name, x, severity, gen)

#: every registry by the name ``sturdynet list`` uses
REGISTRIES: Dict[str, Registry] = {
    "datasets": DATASETS, "models": MODELS, "methods": METHODS, "checks": CHECKS, "attacks": ATTACKS,
    "callbacks": CALLBACKS, "adversarial": ADVERSARIAL, "faults": FAULTS, "corruptions": CORRUPTIONS,
}
