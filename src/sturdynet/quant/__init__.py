"""Quantizers and quantization methods (registered in ``sturdynet.registry.METHODS``)."""
from .base import GRAD_MODES, Quantizer
from . import uniform  # noqa: F401
from . import binary  # noqa: F401  (binary networks)

__all__ = ["GRAD_MODES", "Quantizer"]
