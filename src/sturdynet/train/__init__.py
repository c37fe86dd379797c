"""Training: one loop (``fit``), callbacks, checkpoints (adversarial training: train.adversarial)."""
from ..core.callbacks import Callback, TrainState
from .config import TrainConfig
from .loop import TrainingDiverged, evaluate_accuracy, fit

__all__ = ["Callback", "TrainState", "TrainConfig", "TrainingDiverged", "evaluate_accuracy", "fit"]
