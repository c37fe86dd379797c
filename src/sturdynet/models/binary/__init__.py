"""Binary networks (registered in ``sturdynet.core.registry.MODELS``): Bi-Real ResNets, binary VGG-Small."""
from .common import BinaryNet, binary_conv3x3
from . import bireal, vgg_small  # noqa: F401

__all__ = ["BinaryNet", "binary_conv3x3"]
