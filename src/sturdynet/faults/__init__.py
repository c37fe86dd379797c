"""Weight attacks and hardware faults: bit-level weight view, the Bit-Flip Attack,
random bit flips, bit-error-rate injection and fault defenses.

Registers the fault models ``random_flips`` and ``ber`` (``FAULTS``), the checks
``bfa``, ``random_flips`` and ``ber`` (``CHECKS``), the defenses ``faults.clipact`` and
``faults.clustering`` (``METHODS``) and the training callback ``piecewise_clustering``
(``CALLBACKS``).
"""
from .bitview import BitView, StoredWeights, ViewParams, deploy, hamming_distance, is_deployed
from .bfa import BFAResult, BitFlipAttack
from . import ber, bfa_check, clipact, clustering, random_flips  # noqa: F401
from .ber import BitErrors
from .random_flips import RandomFlips
from .clipact import ClippedReLU
from .clustering import PiecewiseClustering

__all__ = ["BFAResult", "BitErrors", "BitFlipAttack", "BitView", "ClippedReLU", "PiecewiseClustering", "RandomFlips", "StoredWeights", "ViewParams",
           "deploy", "hamming_distance", "is_deployed"]
