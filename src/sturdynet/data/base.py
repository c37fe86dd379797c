"""In-memory data sets: float tensors in [0, 1], seeded stratified splits, batching.

Every data set loader returns a :class:`DataBundle` built by :func:`make_bundle`, which
validates shapes and ranges, carves a stratified validation split out of the training
data, applies the optional ``subset`` sizes, poisons the training split when ``poison``
asks for it (BadNets, :mod:`.poison`) and records per-channel mean and std (which the
model's first layer uses for normalization).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core.params import rng
from .poison import PoisonParams, poison_arrays


@dataclass(frozen=True)
class SubsetParams:
    """Stratified subset sizes (None keeps the whole split)."""

    train: Optional[int] = rng(1, None, default=None)
    val: Optional[int] = rng(0, None, default=None)
    test: Optional[int] = rng(1, None, default=None)


@dataclass(frozen=True)
class DataParams:
    """Fields every data set accepts."""

    val_fraction: float = rng(0, 1, "[)", default=0.1)
    subset: Optional[SubsetParams] = None
    augment: Literal["none", "crop_flip", "flip"] = "none"
    poison: Optional[PoisonParams] = None  # BadNets poisoning of the training split (data/poison.py)


@dataclass
class Split:
    """Images ``x`` (N, C, H, W) float32 in [0, 1] and labels ``y`` (N,) int64."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: Optional[int]) -> "Split":
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Split(self.x[:n], self.y[:n])


@dataclass
class DataBundle:
    """Train / val / test splits plus what a model needs to know about the data."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: str = "none"
    info: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def input_size(self) -> Tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    def describe(self) -> dict:
        return {"name": self.name, "train": len(self.train), "val": len(self.val), "test": len(self.test),
                "num_classes": self.num_classes, "in_channels": self.in_channels,
                "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "class_names": self.class_names, **self.info}


def stratified_indices(y: Tensor, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Pick ``n`` indices with class proportions kept; returns (picked, rest), both sorted.

    Each class gets ``round(n * share)`` by the largest-remainder rule, so the total is
    exactly ``n``.
    """
    total = int(y.numel())
    if not 0 <= n <= total:
        raise ValueError(f"cannot pick {n} of {total} samples")
    classes, counts = torch.unique(y, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    short = n - int(quota.sum())
    if short > 0:
        order = torch.argsort(exact - quota.double(), descending=True, stable=True)
        quota[order[:short]] += 1
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        perm = idx[torch.randperm(idx.numel(), generator=generator)]
        picked.append(perm[:q])
    sel = torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)
    mask = torch.zeros(total, dtype=torch.bool)
    mask[sel] = True
    return torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()


#: samples checked per chunk (bounds the temporary memory of the value checks)
_CHUNK = 4096


def check_batch(x: Tensor, y: Optional[Tensor] = None, num_classes: Optional[int] = None,
                what: str = "images", offset: int = 0) -> None:
    """Validate one batch (or a whole split): finite pixels in [0, 1], labels in 0..K-1.

    Streaming loaders call it per batch; ``offset`` is the batch's first sample index in
    its file or split, so the error names the sample as stored.

    Args:
        x: images (N, ...) float (integer images are in range by construction and skipped).
        y: labels (N,), or None to check images only.
        num_classes: K; labels must lie in 0..K-1 (only ``>= 0`` when None).
        what: the file and array the batch came from (``data.npz: x_train``), used in errors.
        offset: index of ``x[0]`` in its source.

    Raises:
        ValueError: one line naming ``what`` and the first bad sample's index.
    """
    if torch.is_floating_point(x) and x.numel():
        flat = x.reshape(x.shape[0], -1) if x.dim() else x.reshape(1, 1)
        for s in range(0, flat.shape[0], _CHUNK):
            part = flat[s:s + _CHUNK]
            bad = ~torch.isfinite(part).all(dim=1)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                row = part[i]
                kind = "NaN" if bool(torch.isnan(row).any()) else "infinite"
                raise ValueError(f"{what}[{offset + s + i}] has a {kind} value (images must be finite, in [0, 1])")
            out = (part < 0).any(dim=1) | (part > 1).any(dim=1)
            if bool(out.any()):
                i = int(out.nonzero()[0])
                row = part[i]
                raise ValueError(f"{what}[{offset + s + i}]: values must lie in [0, 1], got min "
                                 f"{float(row.min()):.3g}, max {float(row.max()):.3g}")
    if y is not None and y.numel():
        if torch.is_floating_point(y) or y.dtype == torch.bool:
            raise ValueError(f"{what}: labels must be integers, got {y.dtype}")
        hi = num_classes - 1 if num_classes is not None else None
        bad = (y < 0) if hi is None else ((y < 0) | (y > hi))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            want = ">= 0" if hi is None else f"in 0..{hi}"
            raise ValueError(f"{what}: label {int(y[i])} at index {offset + i} is not {want}")


def _check_arrays(x: Tensor, y: Tensor, what: str, source: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{source}: {what} images must have shape (N, C, H, W), got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{source}: {what} labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{source}: {what} split is empty")
    if not torch.is_floating_point(x):
        raise ValueError(f"{source}: {what} images must be float in [0, 1], got {x.dtype}")
    check_batch(x, y, None, f"{source}: {what}")


def check_classes(y_train: Tensor, y_test: Tensor, class_names: Optional[Sequence[str]], source: str) -> int:
    """The number of classes K, after checking that labels are 0..K-1 and every class has
    training images (a class seen only in the test split, or named only in ``class_names``,
    cannot be learnt).

    Raises:
        ValueError: one line naming ``source`` and the first missing or stray class.
    """
    present = torch.unique(y_train)
    k = len(class_names) if class_names is not None else int(present.max()) + 1
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    check_batch(y_train.new_zeros((0,)).float(), y_train, k, f"{source}: train")
    check_batch(y_test.new_zeros((0,)).float(), y_test, k, f"{source}: test")
    if present.numel() != k:
        have = set(present.tolist())
        missing = [c for c in range(k) if c not in have]
        extra = f", nor do {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"{source}: class {missing[0]} ({names[missing[0]]!r}) has no training images{extra} "
                         f"(labels must be 0..K-1 with every class in the training split; K = {k})")
    return k


def make_bundle(name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                params: DataParams, seed: int, class_names: Optional[Sequence[str]] = None,
                info: Optional[dict] = None) -> DataBundle:
    """Validate arrays and build a bundle with a seeded, stratified validation split.

    Args:
        x_train, y_train, x_test, y_test: float images in [0, 1] and int labels.
        params: the data set's validated parameters (``val_fraction``, ``subset``, ...).
        seed: the recipe seed; the same seed gives the same splits.
    """
    source = str((info or {}).get("source") or name)
    for what, t in (("train labels", y_train), ("test labels", y_test)):
        if torch.is_floating_point(t) or t.dtype == torch.bool:
            raise ValueError(f"{source}: {what} must be integers, got {t.dtype}")
    x_train, x_test = x_train.float().contiguous(), x_test.float().contiguous()
    y_train, y_test = y_train.long(), y_test.long()
    _check_arrays(x_train, y_train, "train", source)
    _check_arrays(x_test, y_test, "test", source)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{source}: train images are {tuple(x_train.shape[1:])} but test images are "
                         f"{tuple(x_test.shape[1:])}")
    num_classes = check_classes(y_train, y_test, class_names, source)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    g = torch.Generator().manual_seed(seed)
    n_val = int(round(params.val_fraction * len(y_train)))
    val_idx, train_idx = stratified_indices(y_train, n_val, g)
    # One gather per split: select and shuffle with a single index (images are copied once).
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=g)]
    val_idx = val_idx[torch.randperm(val_idx.numel(), generator=g)]
    test_idx = torch.randperm(len(y_test), generator=g)
    train = Split(x_train[train_idx], y_train[train_idx])
    val = Split(x_train[val_idx], y_train[val_idx])
    test = Split(x_test[test_idx], y_test[test_idx])
    sub = params.subset
    if sub is not None:
        def cut(split: Split, n: Optional[int]) -> Split:
            if n is None or n >= len(split):
                return split
            keep, _ = stratified_indices(split.y, n, g)
            keep = keep[torch.randperm(keep.numel(), generator=g)]
            return Split(split.x[keep], split.y[keep])
        train, val, test = cut(train, sub.train), cut(val, sub.val), cut(test, sub.test)
    info = dict(info or {})
    if getattr(params, "poison", None) is not None:  # the training split only: val and test stay clean
        px, py, facts = poison_arrays(train.x, train.y, params.poison, len(names), seed)
        train = Split(px, py)
        info.update(facts)
    mean = tuple(float(v) for v in train.x.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in train.x.std(dim=(0, 2, 3)))
    return DataBundle(name=name, train=train, val=val, test=test, num_classes=len(names),
                      class_names=names, mean=mean, std=std, augment=params.augment, info=info)


def batches(split: Split, batch_size: int, shuffle: bool = False,
            generator: Optional[torch.Generator] = None, drop_last: bool = False) -> Iterator[Tuple[Tensor, Tensor]]:
    """Yield (x, y) mini-batches of a split (a streamed split decodes them in worker processes)."""
    if hasattr(split, "batches"):
        yield from split.batches(batch_size, shuffle, generator, drop_last)
        return
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - (n % batch_size) if drop_last else n
    for i in range(0, stop, batch_size):
        if order is None:
            yield split.x[i:i + batch_size], split.y[i:i + batch_size]
        else:
            idx = order[i:i + batch_size]
            yield split.x[idx], split.y[idx]
