"""Binary networks: sign estimators, ``binarize``, ReSTE annealing, OvSW, RA-BNN growth."""
from .estimators import ESTIMATORS, estimator_slope, sign_ste
from .quantizers import BinaryWeightQuantizer, SignActivation, binary_layers, binary_weights
from . import binarize, bireal_init, reste, sign_flips, ovsw, ra_bnn  # noqa: F401

__all__ = ["ESTIMATORS", "BinaryWeightQuantizer", "SignActivation", "binary_layers", "binary_weights",
           "estimator_slope", "sign_ste"]
