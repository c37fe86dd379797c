"""Lottery tickets: IMP with rewinding, COLT, early-bird detection."""
from . import early_bird, imp, colt  # noqa: F401  (register prune.imp, prune.colt, callback early_bird)
from .common import RewindRecorder, initial_state, magnitude_masks, reinitialize, rewind, weights_state
from .early_bird import EarlyBird, mask_distance

__all__ = ["EarlyBird", "RewindRecorder", "initial_state", "magnitude_masks", "mask_distance", "reinitialize",
           "rewind", "weights_state"]
