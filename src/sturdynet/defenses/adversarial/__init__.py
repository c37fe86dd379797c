"""Adversarial training methods (registered in ``sturdynet.core.registry.ADVERSARIAL``).

Select one with ``train: {adversarial: {method: pgd|trades|fgsm_rs|part, eps: ..., ...}}``
(or in a variant's ``finetune:``).
"""
from . import fgsm_rs, part, pgd_at, trades  # noqa: F401
from .base import AdversarialCallback

__all__ = ["AdversarialCallback"]
