"""Defenses: what buys robustness back.

- adversarial training (:mod:`.adversarial`: PGD-AT, TRADES, fast FGSM-RS, PART) and
  defensive distillation (:mod:`.distill`);
- robust pruning: HYDRA (:mod:`.hydra`), robust lottery tickets (:mod:`.robust_ticket`);
- against weight faults: FT-ClipAct (:mod:`.clipact`, one clip per activation call site:
  :mod:`.clipact_sites`), piece-wise clustering (:mod:`.clustering`);
- against backdoors: Fine-Pruning (:mod:`.fine_pruning`);
- for certification: Gaussian noise training (:mod:`.gaussian_augment`).
"""
from . import adversarial, clipact, clustering, distill, fine_pruning, gaussian_augment, hydra, robust_ticket  # noqa: F401
from .clipact import ActivationClip, ClippedReLU
from .clustering import PiecewiseClustering

__all__ = ["ActivationClip", "ClippedReLU", "PiecewiseClustering"]
