"""Fast gradient sign method (Goodfellow et al., arXiv 1412.6572).

One step of size ``eps`` along the sign of the input gradient of the cross-entropy
(L-inf), or along the L2-normalised gradient (the "fast gradient method" of
Kurakin et al., arXiv 1611.01236, for ``norm="l2"``); the result is clamped to [0, 1].
Targeted mode descends the cross-entropy of the target label.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..core.registry import ATTACKS
from .base import Attack, to_ball, unit


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Single-step gradient attack (no random start)."""

    name = "fgsm"

    def __init__(self, model: nn.Module, *, eps: float = 8 / 255, **kw) -> None:
        super().__init__(model, eps=eps, **kw)

    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        _, grad, _ = self.loss_and_grad(x, self.ce(y, target))
        step = grad.sign() if self.norm == "linf" else unit(grad)
        return to_ball(x, x + self.eps * step, self.eps, self.norm)
