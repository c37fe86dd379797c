"""Pruning: masks and pruners (registered in ``sturdynet.core.registry.METHODS``)."""
from ..core.masks import apply_masks, attach_mask, get_masks, iter_masks, mask_sparsity, prunable, remove_masks
from .erk import counts_from_densities, erk_densities, layer_densities, uniform_densities
from .macs import count_macs
from . import global_magnitude, lamp, layerwise_magnitude, random_pruning, structured  # noqa: F401
from . import lottery, sparse  # noqa: F401  (lottery tickets; dynamic sparse training)

__all__ = ["apply_masks", "attach_mask", "count_macs", "counts_from_densities", "erk_densities", "get_masks",
           "iter_masks", "layer_densities", "mask_sparsity", "prunable", "remove_masks", "uniform_densities"]
