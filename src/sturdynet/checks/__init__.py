"""Every registered check (``sturdynet.core.registry.CHECKS``): the one place that combines families.

clean; input attacks (one check per attack, generated from its declaration: fgsm, pgd, apgd, square,
cw, fab; transfer; robust) and the gradient-masking flags;
weight faults (bfa, random_flips, ber); corruptions; certify; backdoor.
"""
from .base import CheckContext, eval_split, summarize, worst_case
from . import clean, attacks, transfer, robust  # noqa: F401
from . import bfa, ber, random_flips, corruptions, certify, backdoor  # noqa: F401

__all__ = ["CheckContext", "eval_split", "summarize", "worst_case"]
