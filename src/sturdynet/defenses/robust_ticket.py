"""Robust lottery tickets: IMP driven by the adversarial loss, stopped early by early-bird.

Lottery tickets drawn with adversarial training keep robustness that tickets drawn with
the clean loss lose (Li et al., "Towards Robust Lottery Tickets", and the robust
early-bird tickets of Chen et al., arXiv 2010.00436 / You et al., arXiv 1909.11957).
This method runs sturdynet's IMP with rewinding (``prune.imp``, arXiv 1803.03635 and
1912.05671) with every training stage (the dense run and each round) under an
adversarial-training objective: ``adversarial`` (default PGD-AT at eps 8/255, 10
steps), and with early-bird detection on by default, so the dense adversarial run —
the most expensive stage — stops as soon as the mask stops changing.

Compare with ``prune.imp`` at the same ``sparsity`` and ``rounds`` to see what the
robust objective buys.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from ..core.method import TrainingContext, TrainingMethod, require_training
from ..core.params import Component
from ..prune.lottery.imp import IMPParams, IterativeMagnitudePruning
from ..core.registry import ADVERSARIAL, METHODS
from ..train.config import parse_adversarial


def _default_adversarial() -> Component:
    return Component("pgd", ADVERSARIAL.params("pgd")())


@dataclass(frozen=True)
class RobustTicketParams(IMPParams):
    adversarial: Optional[Component] = field(default=None, metadata={"parse": parse_adversarial})
    early_bird: bool = True


@METHODS.register("prune.robust_ticket", params=RobustTicketParams)
class RobustTicket(TrainingMethod):
    """IMP under the adversarial loss (see the module docstring)."""

    def _imp_params(self, params: RobustTicketParams) -> IMPParams:
        fields = {f.name: getattr(params, f.name) for f in dataclasses.fields(IMPParams)}
        return IMPParams(**fields)

    def prepare(self, model: nn.Module, params: RobustTicketParams) -> nn.Module:
        return IterativeMagnitudePruning().prepare(model, self._imp_params(params))

    def apply(self, model: nn.Module, params: RobustTicketParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "prune.robust_ticket")
        adv = params.adversarial or ctx.train.adversarial or _default_adversarial()
        robust_ctx = dataclasses.replace(ctx, train=dataclasses.replace(ctx.train, adversarial=adv))
        out = IterativeMagnitudePruning().apply(model, self._imp_params(params), robust_ctx)
        if "imp" in robust_ctx.log:
            ctx.log["robust_ticket"] = {**robust_ctx.log["imp"], "adversarial": adv.to_dict("method")}
        return out
