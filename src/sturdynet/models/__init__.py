"""Models (registered in ``sturdynet.registry.MODELS``); normalization is their first layer."""
from .common import Normalize, build_model, model_for_data
from . import mlp, small_cnn  # noqa: F401

__all__ = ["Normalize", "build_model", "model_for_data"]
