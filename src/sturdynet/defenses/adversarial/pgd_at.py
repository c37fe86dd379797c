"""PGD adversarial training (Madry et al., arXiv 1706.06083).

Each training batch is replaced by L-inf PGD examples (random start in the eps-ball,
``steps`` signed-gradient steps of size ``alpha``, default 2.5 * eps / steps) and the
model is trained on the cross-entropy of those examples. Deviation: the examples come
from sturdynet's PGD, which keeps each sample's best iterate rather than the last one
(never weaker, at the same cost of ``steps`` forward+backward passes).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ...attacks import create_attack
from ...core.registry import ADVERSARIAL
from .base import AdvParams, AdversarialCallback


@dataclass(frozen=True)
class PGDATParams(AdvParams):
    pass


@ADVERSARIAL.register("pgd", params=PGDATParams)
class PGDAT(AdversarialCallback):
    """Train on PGD examples (the min-max objective of Madry et al.)."""

    def craft(self, state, x: Tensor, y: Tensor) -> Tensor:
        atk = create_attack("pgd", state.model, eps=self.eps, steps=self.steps, alpha=self.alpha,
                            random_start=True, seed=int(state.step), batch_size=max(1, x.shape[0]))
        return atk(x, y)
