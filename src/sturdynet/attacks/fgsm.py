"""Fast gradient sign method (Goodfellow et al., arXiv 1412.6572).

One step of size ``eps`` along the sign of the input gradient of the cross-entropy
(L-inf), or along the L2-normalised gradient (the "fast gradient method" of
Kurakin et al., arXiv 1611.01236, for ``norm="l2"``); the result is clamped to [0, 1].
Targeted mode descends the cross-entropy of the target label.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..core.registry import ATTACKS
from .base import Attack, AttackParams, to_ball, unit


@ATTACKS.register("fgsm", params=AttackParams)
class FGSM(Attack):
    """Single-step gradient attack (no random start; only the shared fields)."""

    name = "fgsm"

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        _, grad, _ = self.loss_and_grad(x, self.ce(y, target))
        step = grad.sign() if self.norm == "linf" else unit(grad)
        return to_ball(x, x + self.eps * step, self.eps, self.norm)
