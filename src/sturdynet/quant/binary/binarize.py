"""``binarize``: binary weights and activations for any conv/linear model.

Every ``nn.Conv2d`` / ``nn.Linear`` except the first and the last (kept at full
precision by default, as the standard binary-network recipes do) becomes a
:class:`~sturdynet.quant.QuantConv2d` / :class:`~sturdynet.quant.QuantLinear` whose weights
are ``sign(w) * alpha`` (``alpha`` = per-output-channel mean |w|, XNOR-Net, arXiv
1603.05279) and whose input is ``sign(x)``. The backward pass uses the named estimator
(``ste``, ``clipped_ste``, ``approx_sign`` from Bi-Real Net arXiv 1808.00278, ``reste``
from arXiv 2308.06689), or the true gradient under ``gradient_mode(model, "true")``.

Applied to a model that is already binary (for example ``bireal_resnet20``), it
changes only the estimators. With ``epochs > 0`` the method also trains the binary
model (quantization-aware training) through ``ctx.fit``: at the base learning rate /
10 unless ``lr`` is given, with the ReSTE annealing callback when the estimator is
``reste``, OvSW when ``ovsw: true`` and the sign-flip diagnostic otherwise.

Note: binarizing a ReLU network gives {0, 1} activations (``sign`` of a ReLU output);
networks designed for binarization (``bireal_*``, ``binary_vgg_small``) avoid this.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, List, Optional

from torch import nn

from ...core.method import TrainingContext, TrainingMethod, require_training
from ...core.params import rng
from ..layers import convert
from ...core.registry import METHODS
from .estimators import Estimator
from .quantizers import BinaryWeightQuantizer, SignActivation, binary_layers, sign_quantizers



@dataclass(frozen=True)
class BinarizeParams:
    """Parameters of the ``binarize`` method."""

    estimator: Estimator = "clipped_ste"
    weight_estimator: Optional[Estimator] = None  # None: same as ``estimator``
    activations: bool = True  # False: binary weights, real activations
    binarize_first: bool = False
    binarize_last: bool = False
    epochs: int = rng(0, None, default=0)
    lr: Optional[float] = rng(0, None, "(]", default=None)
    ovsw: bool = False
    reste_o_end: float = rng(1, None, default=3.0)


def set_estimator(model: nn.Module, estimator: str, weight_estimator: Optional[str] = None) -> int:
    """Set the estimator of every binary quantizer in ``model``; returns how many changed."""
    n = 0
    for q in sign_quantizers(model):
        name = (weight_estimator or estimator) if isinstance(q, BinaryWeightQuantizer) else estimator
        q.estimator = name
        q.o = 1.0
        n += 1
    return n


def binarize_model(model: nn.Module, params: BinarizeParams) -> nn.Module:
    """Binarize ``model`` in place (structure only; nothing is trained)."""
    if binary_layers(model):
        set_estimator(model, params.estimator, params.weight_estimator)
        return model
    west = params.weight_estimator or params.estimator

    def make_w(layer: nn.Module) -> BinaryWeightQuantizer:
        return BinaryWeightQuantizer(layer.weight.shape[0], west)

    def make_a(layer: nn.Module) -> Optional[SignActivation]:
        return SignActivation(params.estimator) if params.activations else None

    before = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    if before - (not params.binarize_first) - (not params.binarize_last) < 1:
        raise ValueError("binarize: the model has no conv/linear layer left to binarize "
                         "besides the full-precision first and last ones")
    return convert(model, make_w, make_a, skip_first=not params.binarize_first,
                   skip_last=not params.binarize_last)


def binary_callbacks(estimator: str, weight_estimator: Optional[str], ovsw: bool, o_end: float = 3.0) -> List[Any]:
    """The training callbacks a binary model needs: ReSTE annealing, OvSW or the diagnostic."""
    from .ovsw import OvSW
    from .reste import ReSTEAnneal
    from .sign_flips import SignFlips

    cbs: List[Any] = []
    if "reste" in (estimator, weight_estimator):
        cbs.append(ReSTEAnneal(o_end=o_end))
    cbs.append(OvSW() if ovsw else SignFlips())
    return cbs


@METHODS.register("binarize", params=BinarizeParams)
class Binarize(TrainingMethod):
    """Binary weights (sign * per-channel alpha) and sign activations, optional QAT."""

    def prepare(self, model: nn.Module, params: BinarizeParams) -> nn.Module:
        return binarize_model(copy.deepcopy(model), params)

    def apply(self, model: nn.Module, params: BinarizeParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "binarize")
        model = self.prepare(model, params)
        log = {"binary_layers": len(binary_layers(model)), "estimator": params.estimator,
               "weight_estimator": params.weight_estimator or params.estimator}
        if params.epochs > 0:
            log["history"] = train_binary(model, params, ctx, "binarize")
        ctx.log["binarize"] = log
        return model


def train_binary(model: nn.Module, params: Any, ctx: TrainingContext, who: str) -> list:
    """QAT of a binary model for ``params.epochs`` through ``ctx.fit`` (lr/10 unless ``params.lr``)."""
    over = {"lr": params.lr} if params.lr is not None else None
    cfg = ctx.finetune(params.epochs, over, who)
    cbs = binary_callbacks(params.estimator, params.weight_estimator, params.ovsw, params.reste_o_end)
    return ctx.fit(model, cfg, callbacks=cbs)
