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

A registry knows the packages that hold its built-in entries and imports them the first
time it is asked anything, so no ``import sturdynet.plugins`` is needed and an empty
registry never answers "available: none". The import is by module name at run time
(``importlib``), so core/ keeps importing no family.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from typing import Any, Callable, Dict, List, Optional, Sequence

from .params import ConfigError, from_dict, kwargs_of

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
        self._loaded = not self.home

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: a home module may ask the registry while it loads
            for mod in self.home:
                importlib.import_module(mod)

    def register(self, name: str, params: Optional[type] = None) -> Callable[[Any], Any]:
        """Decorator that records ``obj`` under ``name``.

        Args:
            name: the public name (used in recipes and on the command line).
            params: frozen dataclass describing the entry's parameters; recipes,
                :meth:`create` and the command line validate user input against it.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string")

        def deco(obj: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            self._params[name] = params
            return obj

        return deco

    def unknown(self, name: Any) -> str:
        """``unknown <kind> 'x'`` plus the nearest registered names (one line)."""
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        names = self.names()
        if close:
            hint = f"did you mean {', '.join(close)}?"
        elif len(names) <= 12:
            hint = f"known: {', '.join(names)}"
        else:
            hint = f"{len(names)} known; `sturdynet list` shows them"
        return f"unknown {self.kind} {name!r} ({hint})"

    def get(self, name: str) -> Any:
        """Return the registered object, or raise a ValueError naming the nearest names."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(self.unknown(name)) from None

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
        """Validate ``params`` and build the entry registered under ``name``."""
        return self.build(self.get(name), self.validate(name, params), *args)

    def create_from(self, comp: Any, *args: Any) -> Any:
        """Build an already validated :class:`~sturdynet.core.params.Component` (a recipe's)."""
        return self.build(self.get(comp.name), self.validate(comp.name, comp.params), *args)

    def names(self, pattern: str = "*") -> List[str]:
        """Sorted names matching a shell-style glob."""
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._load()
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
