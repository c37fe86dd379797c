"""Certified robustness by randomized smoothing (Cohen, Rosenfeld and Kolter, arXiv 1902.02918).

- :mod:`.smoothing`: the smoothed classifier with PREDICT and CERTIFY;
- :mod:`.stats`: the Clopper-Pearson bound and the binomial test they use;
- :mod:`.check`: the ``certify`` check (certified accuracy against L2 radius);
- :mod:`.gaussian_augment`: the ``gaussian_augment`` training callback (noise augmentation).
"""
from . import check, gaussian_augment  # noqa: F401  (register the check and the callback)
from .smoothing import ABSTAIN, Certificate, SmoothedClassifier
from .stats import binomial_pvalue, clopper_pearson_lower

__all__ = ["ABSTAIN", "Certificate", "SmoothedClassifier", "binomial_pvalue", "clopper_pearson_lower"]
