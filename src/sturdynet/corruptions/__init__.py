"""Common corruptions (Hendrycks & Dietterich, arXiv 1903.12261): CIFAR-10-C / ImageNet-C style
noise, blur, weather and digital corruptions at severities 1..5.

Registers the corruptions in ``sturdynet.core.registry.CORRUPTIONS`` (``CORRUPTIONS.names()``);
the ``corruptions`` check is :mod:`sturdynet.checks.corruptions`. ``corrupt(x, name, severity,
generator)`` applies one.
"""
from ..core.registry import CORRUPTIONS
from .base import BENCHMARK, EXTRAS, SEVERITIES, Corruption, check_images, check_severity, corrupt, register_corruption, size_scale
from . import noise, blur, weather, digital, elastic  # noqa: F401  (register the corruptions)

__all__ = ["BENCHMARK", "CORRUPTIONS", "EXTRAS", "Corruption", "SEVERITIES", "check_images",
           "check_severity", "corrupt", "register_corruption", "size_scale"]
