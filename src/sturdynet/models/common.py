"""Pieces shared by every model: the Normalize first layer and the build entry point."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core.registry import MODELS


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every sturdynet model.

    Keeping normalization inside the model means every attack and check works on
    images in [0, 1] and eps is measured in pixel units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected input (N, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}")
        return (x - self.mean) / self.std


def build_model(name: str, in_channels: int, num_classes: int, input_size: Tuple[int, int],
                mean: Sequence[float] = (), std: Sequence[float] = (), **params) -> nn.Module:
    """Create a registered model; ``mean``/``std`` default to 0/1 per channel."""
    mean = tuple(mean) or (0.0,) * in_channels
    std = tuple(std) or (1.0,) * in_channels
    model = MODELS.create(name, in_channels, num_classes, input_size, mean, std, **params)
    model.sturdynet_model = name  # marks a built-in model (structured pruning's module engine knows these)
    return model


def model_for_data(spec, data, load: bool = True) -> nn.Module:
    """Build the recipe's ``model`` (a registered component or a
    :class:`~sturdynet.models.spec.ModelSpec`) for a :class:`~sturdynet.data.DataBundle`;
    ``load`` reads the spec's ``weights``."""
    from .spec import ModelSpec, build_from_spec

    if isinstance(spec, ModelSpec):
        return build_from_spec(spec, data.in_channels, data.num_classes, data.input_size, data.mean, data.std,
                               load=load)
    return build_model(spec.name, data.in_channels, data.num_classes, data.input_size,
                       data.mean, data.std, **spec.kwargs())
