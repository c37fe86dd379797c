"""``binarize.bireal``: a float CIFAR ResNet becomes its Bi-Real binary twin, initialized from it.

Bi-Real Net (arXiv 1808.00278, Sec. 3.3) trains a binary network starting from a trained
real-valued network of the same layout. This method maps a float CIFAR ResNet
(:mod:`sturdynet.models.resnet_cifar`: ``resnet20`` with 3 blocks per stage, or
``resnet18`` with 4 stages of 2 blocks) onto ``bireal_resnet20`` / ``bireal_resnet18``:
normalization, stem conv and BN, both convs and BNs of every basic block (``conv1`` ->
the block's first Bi-Real unit, ``conv2`` -> its second) and the classifier are copied.
Where the shape changes, a projection shortcut (option B) is copied into the Bi-Real
1x1 conv + BN (its stride becomes Bi-Real's 2x2 average pooling); an option-A shortcut
(subsampling plus zero-padded channels) becomes the 1x1 conv that places input channel
``i`` at output channel ``pad_front + i``. The float network's ReLUs have no counterpart
(``sign`` is the only nonlinearity of a Bi-Real network), so the twin starts from the
float *weights*, not from the float *function*; ``epochs > 0`` then trains it (QAT, like
``binarize``: lr / 10 unless ``lr``, ReSTE annealing, OvSW or the sign-flip diagnostic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from ...core.method import TrainingContext, TrainingMethod, require_training
from ...core.params import rng
from ...core.registry import METHODS, MODELS
from .binarize import train_binary
from .estimators import Estimator


@dataclass(frozen=True)
class BiRealInitParams:
    estimator: Estimator = "approx_sign"
    weight_estimator: Estimator = "clipped_ste"
    epochs: int = rng(0, None, default=0)
    lr: Optional[float] = rng(0, None, "(]", default=None)
    ovsw: bool = False
    reste_o_end: float = rng(1, None, default=3.0)


def _stages(model: nn.Module) -> List[nn.Sequential]:
    names = getattr(model, "stage_names", None)
    if not names or not all(hasattr(model, a) for a in ("conv1", "bn1", "fc", "normalize")):
        raise ValueError("binarize.bireal needs a float CIFAR ResNet (resnet20 or resnet18), "
                         f"got {type(model).__name__}")
    return [getattr(model, n) for n in names]


@torch.no_grad()
def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    dst.load_state_dict(src.state_dict())


@torch.no_grad()
def _copy_shortcut(dst: nn.Sequential, block: nn.Module) -> None:
    conv, bn = dst[1], dst[2]
    sc = block.shortcut
    if isinstance(sc, nn.Sequential):  # option B: 1x1 conv + BN
        conv.weight.copy_(sc[0].weight)
        _copy_bn(bn, sc[1])
    elif hasattr(sc, "pad_front"):  # option A: identity embedding at pad_front
        conv.weight.zero_()
        for i in range(sc.in_channels):
            conv.weight[sc.pad_front + i, i, 0, 0] = 1.0


def bireal_twin(model: nn.Module, estimator: str = "approx_sign", weight_estimator: str = "clipped_ste") -> nn.Module:
    """The Bi-Real binary ResNet with ``model``'s weights (see the module docstring)."""
    stages = _stages(model)
    blocks = [len(s) for s in stages]
    if len(stages) == 3 and blocks == [3, 3, 3]:
        arch = "bireal_resnet20"
    elif len(stages) == 4 and blocks == [2, 2, 2, 2]:
        arch = "bireal_resnet18"
    else:
        raise ValueError(f"binarize.bireal maps resnet20 (3x3 blocks) or resnet18 (4x2 blocks); got blocks {blocks}")
    widths = [s[0].conv1.out_channels for s in stages]
    if model.conv1.out_channels != widths[0]:
        raise ValueError("binarize.bireal needs a stem as wide as the first stage")
    norm = model.normalize
    twin = MODELS.get(arch)(in_channels=model.conv1.in_channels, num_classes=model.fc.out_features,
                            input_size=(1, 1),  # Bi-Real ResNets do not depend on the input size
                            mean=norm.mean.flatten().tolist(), std=norm.std.flatten().tolist(), widths=widths,
                            estimator=estimator, weight_estimator=weight_estimator)
    twin.to(model.conv1.weight.device)
    with torch.no_grad():
        twin.normalize.load_state_dict(norm.state_dict())
        twin.stem.weight.copy_(model.conv1.weight)
        _copy_bn(twin.stem_bn, model.bn1)
        units = iter(twin.units)
        for stage in stages:
            for block in stage:
                u1, u2 = next(units), next(units)
                u1.conv.weight.copy_(block.conv1.weight)
                _copy_bn(u1.bn, block.bn1)
                if isinstance(u1.shortcut, nn.Sequential):
                    _copy_shortcut(u1.shortcut, block)
                u2.conv.weight.copy_(block.conv2.weight)
                _copy_bn(u2.bn, block.bn2)
        twin.fc.load_state_dict(model.fc.state_dict())
    twin.train(model.training)
    return twin


@METHODS.register("binarize.bireal", params=BiRealInitParams)
class BiRealInit(TrainingMethod):
    """Float CIFAR ResNet -> Bi-Real binary twin initialized from its weights, optional QAT."""

    def prepare(self, model: nn.Module, params: BiRealInitParams) -> nn.Module:
        return bireal_twin(model, params.estimator, params.weight_estimator)

    def apply(self, model: nn.Module, params: BiRealInitParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "binarize.bireal")
        twin = self.prepare(model, params)
        log = {"arch": twin.arch, "widths": list(twin.widths), "estimator": params.estimator,
               "weight_estimator": params.weight_estimator}
        if params.epochs > 0:
            log["history"] = train_binary(twin, params, ctx, "binarize.bireal")
        ctx.log["binarize.bireal"] = log
        return twin
