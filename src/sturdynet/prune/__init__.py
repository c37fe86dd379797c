"""Pruning: masks and pruners (registered in ``sturdynet.registry.METHODS``)."""
from .mask import apply_masks, attach_mask, get_masks, iter_masks, mask_sparsity, prunable, remove_masks
from . import global_magnitude  # noqa: F401
from . import lottery, sparse  # noqa: F401  (lottery tickets; dynamic sparse training)

__all__ = ["apply_masks", "attach_mask", "get_masks", "iter_masks", "mask_sparsity", "prunable", "remove_masks"]
