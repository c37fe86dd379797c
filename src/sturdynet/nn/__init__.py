"""Drop-in layers and gradient-mode switching."""
from .grad_mode import gradient_mode, has_estimators
from .quant_bn import QuantBatchNorm2d
from .quant_layers import QuantConv2d, QuantLinear, convert, quantizable

__all__ = ["QuantBatchNorm2d", "QuantConv2d", "QuantLinear", "convert", "gradient_mode", "has_estimators",
           "quantizable"]
