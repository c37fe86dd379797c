"""Quantizers and quantization methods (registered in ``sturdynet.registry.METHODS``).

- ``quant.uniform``: k-bit PTQ (min-max / percentile) or QAT with LSQ (arXiv 1902.08153)
- ``quant.ternary``: trained ternary quantization (TTQ, arXiv 1612.01064)
- ``quant.fixed_point``: fixed point with a trainable binary point (arXiv 2401.17544)
- binary networks: :mod:`sturdynet.quant.binary`
"""
from .base import GRAD_MODES, Quantizer, grad_scale, round_ste
from .fixed_point import FixedPointQuantizer
from .lsq import LSQQuantizer
from .ternary import TTQQuantizer
from .uniform import UniformQuantizer, UniformWeightQuantizer
from . import uniform_method, ternary, fixed_point  # noqa: F401  (register the methods)
from . import binary  # noqa: F401  (binary networks)

__all__ = ["GRAD_MODES", "Quantizer", "grad_scale", "round_ste", "FixedPointQuantizer", "LSQQuantizer",
           "TTQQuantizer", "UniformQuantizer", "UniformWeightQuantizer"]
