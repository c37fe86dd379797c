"""Name -> factory registries, in the style of timm's ``create_model``.

Every family (data sets, models, compression methods, checks, attacks, training
callbacks, fault models) owns one :class:`Registry`. Entries are added with the
``@REG.register("name")`` decorator, built with ``REG.create(name, **kw)`` and listed
with ``REG.names("glob*")``. A name can be registered once; a second registration is
an error, so two files can never silently shadow each other.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Dict, List, Optional


class Registry:
    """A named collection of factories.

    Args:
        kind: what the entries are ("model", "data set", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Any] = {}
        self._params: Dict[str, Optional[type]] = {}

    def register(self, name: str, params: Optional[type] = None) -> Callable[[Any], Any]:
        """Decorator that records ``obj`` under ``name``.

        Args:
            name: the public name (used in recipes and on the command line).
            params: optional frozen dataclass describing the entry's parameters; the
                recipe loader validates user input against it.
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

    def get(self, name: str) -> Any:
        """Return the registered object, or raise a ValueError listing what exists."""
        try:
            return self._entries[name]
        except KeyError:
            avail = ", ".join(self.names()) or "none"
            raise ValueError(f"unknown {self.kind} '{name}'; available: {avail}") from None

    def params(self, name: str) -> Optional[type]:
        """The parameter dataclass registered with ``name`` (None if it takes none)."""
        self.get(name)
        return self._params[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the factory registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self, pattern: str = "*") -> List[str]:
        """Sorted names matching a shell-style glob."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


DATASETS = Registry("data set")
MODELS = Registry("model")
METHODS = Registry("compression method")
CHECKS = Registry("check")
ATTACKS = Registry("attack")
CALLBACKS = Registry("training callback")
ADVERSARIAL = Registry("adversarial training method")
FAULTS = Registry("fault model")
CORRUPTIONS = Registry("corruption")
