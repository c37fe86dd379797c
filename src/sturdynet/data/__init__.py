"""Data sets (registered in ``sturdynet.registry.DATASETS``) and batching helpers."""
from .base import DataBundle, DataParams, Split, SubsetParams, batches, make_bundle, stratified_indices
from . import digits, cifar10, imagefolder, npz  # noqa: F401

__all__ = ["DataBundle", "DataParams", "Split", "SubsetParams", "batches", "make_bundle",
           "stratified_indices", "load_data"]


def load_data(spec, seed: int) -> DataBundle:
    """Build the data set named by a recipe's ``data`` component."""
    from ..registry import DATASETS

    return DATASETS.get(spec.name)(spec.params, seed)
