"""Data from the user's own objects: DataLoaders, torch Datasets, (x, y) tuples, tensors,
and ``torchvision.datasets`` classes (registered as the ``torchvision`` data set).

Map-style datasets stay where they are: a :class:`DatasetSource` reads the samples a
batch asks for (through the DataLoader machinery of :mod:`sturdynet.data.stream`), so
nothing is copied into memory beyond the labels. Images may be PIL images, uint8
arrays/tensors (0..255) or float tensors in [0, 1], HWC or CHW.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ..core.params import ConfigError, rng
from ..core.registry import DATASETS
from .base import DataBundle, DataParams, Split
from .stream import ImageSource, LazyImages, StreamSplit, stream_stats


def _to_chw(img: Any) -> Tensor:
    """One image (PIL, ndarray or tensor) as a float (C, H, W) tensor in [0, 1]."""
    if not isinstance(img, (Tensor, np.ndarray)):
        img = np.asarray(img)  # PIL
    t = torch.as_tensor(np.asarray(img)) if isinstance(img, np.ndarray) else img
    if t.dim() == 2:
        t = t.unsqueeze(0)
    elif t.dim() == 3 and t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(2, 0, 1)
    return t.float().div(255.0) if t.dtype == torch.uint8 else t.float()


class DatasetSource(ImageSource):
    """Images of a map-style dataset whose items are ``(image, label)``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.shape = tuple(_to_chw(dataset[0][0]).shape)  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, idx: np.ndarray) -> Tensor:
        return torch.stack([_to_chw(self.dataset[int(i)][0]) for i in idx]) if len(idx) else \
            torch.empty((0, *self.shape))


def dataset_labels(dataset: Any) -> Tensor:
    """All labels of a dataset (``targets`` / ``labels`` attributes when present, else read)."""
    for attr in ("targets", "labels"):
        lab = getattr(dataset, attr, None)
        if lab is not None and len(lab) == len(dataset):
            return torch.as_tensor(np.asarray(lab), dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def as_split(data: Any, workers: int = 0):
    """A :class:`Split` or :class:`StreamSplit` from a DataLoader, a map-style dataset, an
    ``(x, y)`` pair, or a split. An iterable-only loader is read into memory once.

    Raises:
        ValueError: for anything else, naming the type.
    """
    if isinstance(data, (Split, StreamSplit)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
        return Split(x.float(), torch.as_tensor(y).long())
    if isinstance(data, torch.utils.data.DataLoader):
        ds = data.dataset
        if hasattr(ds, "__getitem__") and hasattr(ds, "__len__"):
            if isinstance(ds, torch.utils.data.TensorDataset):
                return Split(ds.tensors[0].float(), ds.tensors[1].long())
            return as_split(ds, data.num_workers)
        xs, ys = zip(*[(xb, yb) for xb, yb in data])
        return Split(torch.cat(xs).float(), torch.cat(ys).long())
    if isinstance(data, torch.utils.data.TensorDataset):
        return Split(data.tensors[0].float(), data.tensors[1].long())
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        src = DatasetSource(data)
        return StreamSplit(LazyImages(src, np.arange(len(src)), workers), dataset_labels(data))
    raise ValueError(f"data must be a DataLoader, a Dataset, an (x, y) pair of tensors or a split, "
                     f"got {type(data).__name__}")


def bundle_from(test: Any, train: Any = None, val: Any = None, num_classes: Optional[int] = None,
                name: str = "user") -> DataBundle:
    """A :class:`DataBundle` around the user's data: ``test`` is what checks measure; ``train``
    (calibration, fine-tuning) and ``val`` (bit-flip attack batches) default to ``test``."""
    te = as_split(test)
    tr = as_split(train) if train is not None else te
    va = as_split(val) if val is not None else tr
    if num_classes is None:
        num_classes = int(max(int(s.y.max()) for s in (tr, va, te) if len(s)) + 1)
    if isinstance(tr, StreamSplit):
        mean, std = stream_stats(tr)
    else:
        mean = tuple(float(v) for v in tr.x.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in tr.x.std(dim=(0, 2, 3)))
    return DataBundle(name=name, train=tr, val=va, test=te, num_classes=num_classes,
                      class_names=[str(i) for i in range(num_classes)], mean=mean, std=std)


@dataclass(frozen=True)
class TorchvisionDataParams(DataParams):
    """``dataset``: a class of ``torchvision.datasets`` taking ``(root, train=...)`` (CIFAR10,
    MNIST, ...); ``root``: where it is stored (never downloaded); ``workers``: decoding processes."""

    dataset: str = ""
    root: str = ""
    workers: int = rng(0, None, default=2)

    def __post_init__(self) -> None:
        if not self.dataset or not self.root:
            raise ConfigError("dataset", "dataset (e.g. CIFAR10) and root are required")


@DATASETS.register("torchvision", params=TorchvisionDataParams)
def load_torchvision(params: TorchvisionDataParams, seed: int) -> DataBundle:
    """A ``torchvision.datasets`` class, streamed (images read per batch)."""
    from .stream import make_stream_bundle

    try:
        import torchvision
    except Exception as e:  # noqa: BLE001 - RuntimeError beside a CPU torch build
        raise ConfigError("data.name", f"torchvision does not import ({type(e).__name__}: {e})") from None
    cls = getattr(torchvision.datasets, params.dataset, None)
    if cls is None:
        raise ConfigError("data.dataset", f"torchvision.datasets has no {params.dataset!r}")
    parts = {s: cls(params.root, train=s == "train", download=False) for s in ("train", "test")}
    srcs = {s: DatasetSource(d) for s, d in parts.items()}
    names = getattr(parts["train"], "classes", None)
    return make_stream_bundle(f"torchvision.{params.dataset}", srcs["train"], dataset_labels(parts["train"]),
                              srcs["test"], dataset_labels(parts["test"]), params, seed, class_names=names,
                              info={"source": params.root}, workers=params.workers)

