"""Certified robustness by randomized smoothing (Cohen, Rosenfeld and Kolter, arXiv 1902.02918).

- :mod:`.smoothing`: the smoothed classifier with PREDICT and CERTIFY;
- :mod:`.stats`: the Clopper-Pearson bound and the binomial test they use;

The ``certify`` check lives in :mod:`sturdynet.checks.certify`; Gaussian noise training
(the ``gaussian_augment`` callback) in :mod:`sturdynet.defenses.gaussian_augment`.
"""
from .smoothing import ABSTAIN, Certificate, SmoothedClassifier
from .stats import binomial_pvalue, clopper_pearson_lower

__all__ = ["ABSTAIN", "Certificate", "SmoothedClassifier", "binomial_pvalue", "clopper_pearson_lower"]
