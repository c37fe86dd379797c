"""Import every built-in package so that its components register themselves.

A new component file is registered by importing it from its package's ``__init__``.
"""
from . import attacks, data, evaluate, export, faults, harden, models, prune, quant, train  # noqa: F401
from . import certify  # noqa: F401
from . import backdoor  # noqa: F401
from . import corruptions  # noqa: F401
from .train import adversarial  # noqa: F401
