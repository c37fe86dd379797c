"""Evaluation checks (registered in ``sturdynet.registry.CHECKS``)."""
from .base import CheckContext, correct_mask, eval_split, predict, summarize, worst_case
from . import clean, pgd_check, cw_check, fab_check, transfer_check, robust_check  # noqa: F401

__all__ = ["CheckContext", "correct_mask", "eval_split", "predict", "summarize", "worst_case"]
