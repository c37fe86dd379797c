"""Models (registered in ``sturdynet.core.registry.MODELS``); normalization is their first layer."""
from .common import Normalize, build_model, model_for_data
from . import mlp, small_cnn, resnet20, resnet18, vgg_small  # noqa: F401
from . import binary  # noqa: F401  (binary networks)

__all__ = ["Normalize", "build_model", "model_for_data"]
