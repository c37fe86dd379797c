"""Weight attacks and hardware faults: bit-level weight view, the Bit-Flip Attack,
random bit flips and bit-error-rate injection.

Registers the fault models ``random_flips`` and ``ber`` (``FAULTS``). Their checks
(``bfa``, ``random_flips``, ``ber``) live in :mod:`sturdynet.checks`; the fault defenses
(``faults.clipact``, ``faults.clustering``) in :mod:`sturdynet.defenses`.
"""
from .bitview import BitView, StoredWeights, ViewParams, deploy, hamming_distance, is_deployed
from .bfa import BFAResult, BitFlipAttack
from .ber import BitErrors
from .random_flips import RandomFlips

__all__ = ["BFAResult", "BitErrors", "BitFlipAttack", "BitView", "RandomFlips", "StoredWeights", "ViewParams",
           "deploy", "hamming_distance", "is_deployed"]
