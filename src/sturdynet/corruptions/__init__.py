"""Common corruptions (Hendrycks & Dietterich, arXiv 1903.12261): CIFAR-10-C / ImageNet-C style
noise, blur, weather and digital corruptions at severities 1..5, and the ``corruptions`` check.

Registers the corruptions in ``sturdynet.registry.CORRUPTIONS`` (``CORRUPTIONS.names()``) and
the check ``corruptions`` in ``CHECKS``. ``corrupt(x, name, severity, generator)`` applies one.
"""
from ..registry import CORRUPTIONS
from .base import SEVERITIES, Corruption, check_images, check_severity, corrupt, register_corruption, size_scale
from . import noise, blur, weather, digital, elastic  # noqa: F401  (register the corruptions)
from . import check  # noqa: F401  (registers the check)
from .check import BENCHMARK, EXTRAS, CorruptionCheckParams

__all__ = ["BENCHMARK", "CORRUPTIONS", "Corruption", "CorruptionCheckParams", "EXTRAS", "SEVERITIES", "check_images",
           "check_severity", "corrupt", "register_corruption", "size_scale"]
