"""Quantizers and quantization methods (registered in ``sturdynet.core.registry.METHODS``).

- ``quant.uniform``: k-bit PTQ (min-max / percentile) or QAT with LSQ (arXiv 1902.08153)
- ``quant.ternary``: trained ternary quantization (TTQ, arXiv 1612.01064)
- ``quant.hq``: hyperspherical quantization (HQ, arXiv 2212.12653): ternary-aligned regularizer, pruning,
  reinitialization, then TTQ layers trained with the STE
- ``quant.fixed_point``: fixed point with a trainable binary point (arXiv 2401.17544)
- binary networks: :mod:`sturdynet.quant.binary`
- drop-in layers (:mod:`.layers`, :mod:`.quant_bn`) and the gradient-mode switch (:mod:`.grad_mode`)
- :class:`BPDA`: declare a non-differentiable op (JPEG-like preprocessing, bit-depth reduction) so
  that attacks get a straight-through mode on it (:mod:`.bpda`)
"""
from .bpda import BPDA
from .grad_mode import gradient_mode, has_estimators
from .layers import QuantConv2d, QuantLinear, convert, quantizable
from .quant_bn import QuantBatchNorm2d
from .base import GRAD_MODES, Quantizer, grad_scale, round_ste
from .fixed_point import FixedPointQuantizer
from .lsq import LSQQuantizer
from .ternary import TTQQuantizer
from .uniform import UniformQuantizer, UniformWeightQuantizer
from . import uniform_method, ternary, hq, fixed_point  # noqa: F401  (register the methods)
from . import binary  # noqa: F401  (binary networks)

__all__ = ["BPDA", "QuantBatchNorm2d", "QuantConv2d", "QuantLinear", "convert", "gradient_mode", "has_estimators",
           "quantizable", "GRAD_MODES", "Quantizer", "grad_scale", "round_ste", "FixedPointQuantizer", "LSQQuantizer",
           "TTQQuantizer", "UniformQuantizer", "UniformWeightQuantizer"]
