"""Data sets (registered in ``sturdynet.core.registry.DATASETS``) and batching helpers."""
from .base import DataBundle, DataParams, Split, SubsetParams, batches, make_bundle, stratified_indices
from . import digits, cifar10, imagefolder, npz, adapt  # noqa: F401

__all__ = ["DataBundle", "DataParams", "Split", "SubsetParams", "batches", "make_bundle",
           "stratified_indices", "load_data"]


def load_data(spec, seed: int) -> DataBundle:
    """Build the data set named by a recipe's ``data`` component."""
    from ..core.registry import DATASETS

    return DATASETS.create_from(spec, seed)
