"""Drop-in layers and gradient-mode switching."""
from .grad_mode import gradient_mode, has_estimators
from .quant_layers import QuantConv2d, QuantLinear, convert

__all__ = ["QuantConv2d", "QuantLinear", "convert", "gradient_mode", "has_estimators"]
