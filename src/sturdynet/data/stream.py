"""Data that does not fit in memory: splits whose images are decoded batch by batch.

A :class:`StreamSplit` keeps only the labels in memory; its ``x`` is a
:class:`LazyImages` view (an index into an :class:`ImageSource`) that decodes the rows
asked for. Sources: a memory-mapped array (``npz`` members stored uncompressed, or the
decoded-image cache) and image files (a directory, or an uncompressed tar read at
member offsets; a compressed archive is first copied, still encoded, into an
uncompressed tar in the cache). Batches come from a ``torch.utils.data.DataLoader``
with worker processes that decode; the order of every pass is fixed by the seeded
index, so a run is deterministic whatever the worker count.

Everything that reads ``split.x`` batch-wise keeps working: ``len``, ``shape``,
indexing (returns decoded float tensors), ``x.split(batch_size)`` (streams), and
``split.take(n)`` (the first ``n`` samples decoded into an in-memory split, which is
what the attack checks use). Splits are carved exactly as in
:func:`sturdynet.data.base.make_bundle` (same seeded stratified indices), so a
streamed data set has the same train/val/test samples in the same order as the
in-memory one.
"""
from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .archive import WatchedTarInfo, require_end_marker
from ..core.params import ConfigError


class ImageSource:
    """N images; ``load(indices) -> (n, C, H, W) float32 tensor in [0, 1]``. Picklable (workers)."""

    shape: Tuple[int, int, int]

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, idx: np.ndarray) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _npy_member(path: Path, name: str) -> Tuple[int, np.dtype, Tuple[int, ...], bool]:
    """(data offset, dtype, shape, fortran order) of an uncompressed ``.npy`` member of a zip."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path}: {name} is compressed; stream needs np.savez (not savez_compressed)")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        n_name, n_extra = int.from_bytes(head[26:28], "little"), int.from_bytes(head[28:30], "little")
        f.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        return f.tell(), dtype, tuple(shape), fortran


class ArraySource(ImageSource):
    """Rows of a memory-mapped uint8 / float array laid out NHWC or NCHW."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: Tuple[int, ...], layout: str) -> None:
        self.path, self.offset, self.dtype, self.full_shape, self.layout = str(path), offset, dtype, shape, layout
        n, *rest = shape
        if len(rest) == 2:
            rest = [rest[0], rest[1], 1] if layout != "nchw" else [1, rest[0], rest[1]]
            self.layout = "nhwc" if layout != "nchw" else "nchw"
        self.shape = (rest[2], rest[0], rest[1]) if self.layout == "nhwc" else tuple(rest)  # type: ignore[assignment]
        self._mm: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.full_shape[0])

    def __getstate__(self):
        return {**self.__dict__, "_mm": None}

    def _array(self) -> np.ndarray:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.full_shape)
        return self._mm

    def load(self, idx: np.ndarray) -> Tensor:
        order = np.argsort(idx, kind="stable")
        rows = np.asarray(self._array()[idx[order]])  # sorted reads, then back to the asked order
        rows = rows[np.argsort(order, kind="stable")]
        c, h, w = self.shape
        rows = rows.reshape(len(idx), h, w, c).transpose(0, 3, 1, 2) if self.layout == "nhwc" \
            else rows.reshape(len(idx), c, h, w)
        t = torch.from_numpy(np.ascontiguousarray(rows))
        return t.float().div_(255.0) if rows.dtype == np.uint8 else t.float()


def npz_source(path: Path, name: str, layout: str = "auto") -> ArraySource:
    """A memory-mapped view of member ``name`` of an uncompressed ``.npz``."""
    offset, dtype, shape, fortran = _npy_member(path, name)
    if fortran:
        raise ValueError(f"{path}: {name} is stored in Fortran order; save it C-contiguous to stream it")
    if len(shape) == 4 and layout == "auto":
        last, first = shape[3] in (1, 3), shape[1] in (1, 3)
        if last == first:
            raise ValueError(f"cannot tell whether {name} of shape {shape} is NHWC or NCHW; set layout")
        layout = "nhwc" if last else "nchw"
    return ArraySource(path, offset, dtype, shape, "nhwc" if layout == "auto" else layout)


class FileSource(ImageSource):
    """Encoded images: ``entries[i]`` is a file path, or ``(tar path, offset, size)``."""

    def __init__(self, entries: Sequence, shape: Tuple[int, int, int], image_size: Optional[int]) -> None:
        self.entries, self.shape, self.image_size = list(entries), shape, image_size

    def __len__(self) -> int:
        return len(self.entries)

    def _bytes(self, e) -> bytes:
        if isinstance(e, str):
            return Path(e).read_bytes()
        path, offset, size = e
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def load(self, idx: np.ndarray) -> Tensor:
        from PIL import Image

        c, h, w = self.shape
        out = np.empty((len(idx), h, w, c), dtype=np.uint8)
        for j, i in enumerate(idx):
            with Image.open(io.BytesIO(self._bytes(self.entries[int(i)]))) as im:
                im = im.convert("L" if c == 1 else "RGB")
                if im.size != (w, h):
                    if self.image_size is None:
                        raise ValueError(f"image {self.entries[int(i)]} is {im.size[0]}x{im.size[1]}, not {w}x{h}; "
                                         "set image_size to resize all images")
                    im = im.resize((w, h), Image.BILINEAR)
                out[j] = np.asarray(im, dtype=np.uint8).reshape(h, w, c)
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def tar_offsets(path: Path) -> dict:
    """``{member name: (path, data offset, size)}`` of the regular files of an uncompressed tar."""
    out = {}
    path = str(path)
    count = 0
    with tarfile.open(path, mode="r:", tarinfo=WatchedTarInfo) as tar:
        for m in tar:
            count += 1
            if m.isfile():
                name = m.name
                while name.startswith("./"):
                    name = name[2:]
                out[name] = (path, m.offset_data, m.size)
            tar.members = []  # TarFile keeps every TarInfo otherwise (~1 KB each)
        require_end_marker(path, getattr(tar, "sturdynet_end", None), count)
    return out


def uncompressed_copy(path: Path, dest: Path) -> Path:
    """Copy a compressed tar into an uncompressed one (members stay encoded), streaming."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    count = 0
    with tarfile.open(path, mode="r|*", tarinfo=WatchedTarInfo) as src, tarfile.open(tmp, mode="w") as out:
        for m in src:
            count += 1
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
            src.members, out.members = [], []  # keep memory flat over 60,000 members
        end = getattr(src, "sturdynet_end", None)
    if end != "marker":
        tmp.unlink(missing_ok=True)
    require_end_marker(path, end, count)
    tmp.replace(dest)
    return dest


class _Batches(torch.utils.data.Dataset):
    def __init__(self, source: ImageSource, chunks: List[np.ndarray]) -> None:
        self.source, self.chunks = source, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Tuple[Tensor, Tensor]:
        idx = self.chunks[i]
        return self.source.load(idx), torch.from_numpy(idx)


def stream(source: ImageSource, index: np.ndarray, batch_size: int, workers: int) -> Iterator[Tuple[Tensor, Tensor]]:
    """Decoded batches of ``source[index]`` in order, as (images, positions in ``index``) pairs."""
    pos = np.arange(len(index))
    chunks = [pos[i:i + batch_size] for i in range(0, len(index), batch_size)]
    ds = _Batches(_Indexed(source, index), chunks)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    for x, p in loader:
        yield x, p


class _Indexed(ImageSource):
    def __init__(self, source: ImageSource, index: np.ndarray) -> None:
        self.source, self.index, self.shape = source, index, source.shape

    def __len__(self) -> int:
        return len(self.index)

    def load(self, idx: np.ndarray) -> Tensor:
        return self.source.load(self.index[idx])


class LazyImages:
    """``source[index]`` as a read-only (N, C, H, W) float image array decoded on demand."""

    def __init__(self, source: ImageSource, index: np.ndarray, workers: int = 0) -> None:
        self.source, self.index, self.workers = source, np.asarray(index, dtype=np.int64), workers

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.source.shape))

    def dim(self) -> int:
        return 4

    def _positions(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(len(self.index))[key]
        if isinstance(key, int):
            return np.array([key])
        k = key.cpu().numpy() if isinstance(key, Tensor) else np.asarray(key)
        if k.ndim == 0:
            return np.array([int(k)])
        return np.nonzero(k)[0] if k.dtype == bool else k.astype(np.int64)

    def subset(self, key) -> "LazyImages":
        return LazyImages(self.source, self.index[self._positions(key)], self.workers)

    def __getitem__(self, key) -> Tensor:
        pos = self._positions(key)
        if len(pos) == 0:
            return torch.empty((0, *self.source.shape))
        out = self.source.load(self.index[pos])
        scalar = isinstance(key, int) or (not isinstance(key, slice) and np.ndim(np.asarray(
            key.cpu() if isinstance(key, Tensor) else key)) == 0)
        return out[0] if scalar else out

    def split(self, batch_size: int) -> Iterator[Tensor]:
        """Decoded batches in order (a DataLoader with ``workers`` decoding processes)."""
        for x, _ in stream(self.source, self.index, batch_size, self.workers):
            yield x

    def to(self, *args, **kwargs) -> Tensor:
        """Decode everything (only sensible for small views)."""
        return self[:].to(*args, **kwargs)


@dataclass
class StreamSplit:
    """Labels ``y`` (N,) int64 in memory, images ``x`` decoded on demand."""

    x: LazyImages
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: Optional[int]):
        """The whole streamed split (``n`` None or >= N), else the first ``n`` samples decoded."""
        from .base import Split

        if n is None or n >= len(self):
            return self
        return Split(self.x[:n], self.y[:n])

    def select(self, idx: Tensor) -> "StreamSplit":
        return StreamSplit(self.x.subset(idx), self.y[idx])

    def batches(self, batch_size: int, shuffle: bool = False, generator: Optional[torch.Generator] = None,
                drop_last: bool = False) -> Iterator[Tuple[Tensor, Tensor]]:
        """(x, y) batches; with ``shuffle`` the order is ``torch.randperm(N, generator)``
        (the same draw as the in-memory :func:`~sturdynet.data.base.batches`)."""
        n = len(self)
        order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
        if drop_last:
            order = order[: n - n % batch_size]
        for x, p in stream(self.x.source, self.x.index[order], batch_size, self.x.workers):
            yield x, self.y[torch.from_numpy(order[p.numpy()])]


def stream_stats(split: StreamSplit, batch_size: int = 256) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and (unbiased) std over a streamed split, float64 accumulators;
    also checks the values lie in [0, 1]."""
    s = ss = None
    n = 0
    for x in split.x.split(batch_size):
        x = x.double()
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError(f"images must lie in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        bs, px = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        s, ss = (bs, px) if s is None else (s + bs, ss + px)
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    var = (ss - n * mean * mean) / max(1, n - 1)
    return tuple(float(v) for v in mean), tuple(max(float(v), 1e-3) for v in var.clamp(min=0).sqrt())


def check_stream_params(params) -> None:
    if getattr(params, "poison", None) is not None:
        raise ConfigError("data.poison", "is not supported with stream: true (poison an in-memory data set)")


def make_stream_bundle(name: str, train_src: ImageSource, y_train: Tensor, test_src: ImageSource, y_test: Tensor,
                       params, seed: int, class_names: Optional[Sequence[str]] = None, info: Optional[dict] = None,
                       workers: int = 0):
    """:func:`sturdynet.data.base.make_bundle` for streamed images: the same seeded
    stratified split indices, the labels in memory, mean and std in one streamed pass."""
    from .base import DataBundle, check_classes, stratified_indices

    check_stream_params(params)
    y_train, y_test = y_train.long(), y_test.long()
    if train_src.shape != test_src.shape:
        raise ValueError(f"train images are {train_src.shape} but test images are {test_src.shape}")
    for what, src, y in (("train", train_src, y_train), ("test", test_src, y_test)):
        if len(src) == 0 or len(src) != len(y):
            raise ValueError(f"{what}: {len(src)} images but {len(y)} labels")
        if int(y.min()) < 0:
            raise ValueError(f"{what} labels must be >= 0, got {int(y.min())}")
    num_classes = check_classes(y_train, y_test, class_names, str((info or {}).get("source") or name))
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    g = torch.Generator().manual_seed(seed)
    n_val = int(round(params.val_fraction * len(y_train)))
    val_idx, train_idx = stratified_indices(y_train, n_val, g)
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=g)]
    val_idx = val_idx[torch.randperm(val_idx.numel(), generator=g)]
    test_idx = torch.randperm(len(y_test), generator=g)

    def split(src: ImageSource, y: Tensor, idx: Tensor) -> StreamSplit:
        return StreamSplit(LazyImages(src, idx.numpy(), workers), y[idx])

    train, val, test = split(train_src, y_train, train_idx), split(train_src, y_train, val_idx), \
        split(test_src, y_test, test_idx)
    sub = params.subset
    if sub is not None:
        def cut(s: StreamSplit, n: Optional[int]) -> StreamSplit:
            if n is None or n >= len(s):
                return s
            keep, _ = stratified_indices(s.y, n, g)
            return s.select(keep[torch.randperm(keep.numel(), generator=g)])
        train, val, test = cut(train, sub.train), cut(val, sub.val), cut(test, sub.test)
    mean, std = stream_stats(train)
    return DataBundle(name=name, train=train, val=val, test=test, num_classes=len(names), class_names=names,
                      mean=mean, std=std, augment=params.augment, info={**(info or {}), "stream": True,
                                                                        "workers": workers})
