"""Image folders (torchvision ``ImageFolder`` layout) in a directory or a tar archive.

Layout: ``train/<class>/<image>`` and ``test/<class>/<image>``, either at the top of
``path`` or inside one top-level folder (``cifar10-jpeg/train/...``). ``path`` may be a
directory or a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive, read directly without
extracting. Classes are the sorted folder names (label = position). Images are decoded
once with Pillow and cached as ``uint8`` arrays (see :mod:`sturdynet.data.cache`).

With ``stream: true`` nothing is decoded up front: the images are listed (a directory's
files, or an uncompressed tar's member offsets; a compressed archive is first copied,
still encoded, into an uncompressed tar in the cache) and DataLoader workers decode
each batch (:mod:`sturdynet.data.stream`). ``channels: auto`` then follows the first
training image (gray if it has one band).
"""
from __future__ import annotations

import io
import os
import struct
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch

from ..core.names import first_line
from ..core.params import ConfigError, rng
from ..core.registry import DATASETS
from .archive import WatchedTarInfo, require_end_marker
from .arrays import to_float_tensor
from .base import DataBundle, DataParams, make_bundle
from .cache import cache_key, load_cached, save_cached, source_fingerprint

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageFolderParams(DataParams):
    """``path``: folder or archive; ``image_size``: resize every image to this square size
    (bilinear) instead of requiring equal sizes; ``channels``: ``auto`` keeps one channel
    when every image is grayscale, else RGB; ``cache``: reuse decoded arrays."""

    path: str = ""
    cache: bool = True
    image_size: Optional[int] = rng(1, None, default=None)
    channels: Literal["auto", "rgb", "gray"] = "auto"
    stream: bool = False  # decode per batch in DataLoader workers instead of holding every image
    workers: int = rng(0, None, default=2)  # decoding worker processes when streaming

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("path", "is required (a folder or a .tar/.tar.gz/.tgz archive)")


Reader = Callable[[], bytes]


def _is_hidden(rel: PurePosixPath) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.parts)


def _scan_directory(root: Path) -> Tuple[List[str], Dict[str, Reader]]:
    dirs, files = [], {}
    for cur, subdirs, names in os.walk(root):
        subdirs.sort()
        rel = Path(cur).relative_to(root).as_posix()
        if rel != ".":
            dirs.append(rel)
        for n in sorted(names):
            full = os.path.join(cur, n)
            key = n if rel == "." else f"{rel}/{n}"
            files[key] = (lambda p=full: Path(p).read_bytes())
    return dirs, files


def _scan_archive(path: Path) -> Tuple[List[str], Dict[str, Reader]]:
    """Read every regular member once (streaming), keeping image bytes in memory.

    Raises:
        ValueError: the archive is unreadable, or truncated (no end-of-archive marker).
    """
    dirs, files = [], {}
    count = 0
    try:
        with tarfile.open(path, mode="r|*", tarinfo=WatchedTarInfo) as tar:
            for m in tar:
                count += 1
                name = m.name
                while name.startswith("./"):
                    name = name[2:]
                name = name.strip("/")
                if m.isdir():
                    dirs.append(name.rstrip("/"))
                elif m.isfile() and name.lower().endswith(IMG_EXTENSIONS):
                    f = tar.extractfile(m)
                    data = f.read() if f is not None else b""
                    files[name] = (lambda d=data: d)
                elif m.isfile():
                    files[name] = (lambda: b"")
            end = getattr(tar, "sturdynet_end", None)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        text = first_line(e)
        if isinstance(e, EOFError) or "end of data" in text or "truncated" in text.lower():
            raise ValueError(f"archive {path} is truncated ({text})") from None
        raise ValueError(f"cannot read archive {path}: {text}") from None
    require_end_marker(path, end, count)
    return dirs, files


def _layout(path: Path, dirs: List[str], files: Dict[str, Reader]) -> Dict[str, Dict[str, List[str]]]:
    """Map split -> class -> sorted image keys, finding the train/test folders."""
    all_dirs = {d for d in dirs if d and d != "."}
    for f in files:
        parts = PurePosixPath(f).parts
        all_dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    all_dirs = {d for d in all_dirs if not _is_hidden(PurePosixPath(d))}
    top = sorted(d for d in all_dirs if "/" not in d)
    if any(s in top for s in SPLITS):
        prefix = ""
    elif len(top) == 1:
        prefix = top[0] + "/"
    else:
        prefix = None
    if prefix is None or not all(prefix + s in all_dirs for s in SPLITS):
        where = prefix if prefix else ""
        missing = [s for s in SPLITS if prefix is None or prefix + s not in all_dirs]
        raise ValueError(f"{path}: no {' and '.join(m + '/' for m in missing)} folder "
                         f"(expected {where}train/<class>/<image> and {where}test/<class>/<image>)")
    out: Dict[str, Dict[str, List[str]]] = {}
    for split in SPLITS:
        base = prefix + split + "/"
        classes = sorted(d[len(base):] for d in all_dirs if d.startswith(base) and "/" not in d[len(base):])
        if not classes:
            raise ValueError(f"{path}: {prefix}{split}/ has no class folders")
        per = {c: [] for c in classes}
        for f in files:
            rel = PurePosixPath(f)
            if not f.startswith(base) or _is_hidden(rel) or not f.lower().endswith(IMG_EXTENSIONS):
                continue
            rest = f[len(base):].split("/")
            if len(rest) >= 2 and rest[0] in per:
                per[rest[0]].append(f)
        for c, keys in per.items():
            if not keys:
                raise ValueError(f"{path}: class folder {prefix}{split}/{c} has no images")
            keys.sort()
        out[split] = per
    if list(out["train"]) != list(out["test"]):
        a, b = set(out["train"]), set(out["test"])
        def few(names: set) -> str:
            names = sorted(names)
            return str(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        diff = [f"only in train: {few(a - b)}" if a - b else "", f"only in test: {few(b - a)}" if b - a else ""]
        raise ValueError(f"{path}: train and test class folders differ ({'; '.join(d for d in diff if d)})")
    return out


def _decode(path: Path, layout: Dict[str, Dict[str, List[str]]], files: Dict[str, Reader],
            image_size: Optional[int], channels: str) -> Dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    mode = "L" if channels == "gray" else "RGB"
    ref: Optional[Tuple[Tuple[int, int], str]] = None
    all_gray = True
    arrays: Dict[str, np.ndarray] = {}
    classes = list(layout["train"])
    for split in SPLITS:
        keys = [(k, label) for label, c in enumerate(classes) for k in layout[split][c]]
        n_ch = 1 if mode == "L" else 3
        x: Optional[np.ndarray] = None
        y = np.empty(len(keys), dtype=np.int64)
        for i, (key, label) in enumerate(keys):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(io.BytesIO(files[key]())) as im:
                        all_gray &= len(im.getbands()) == 1 or im.mode in ("LA", "La")
                        im = im.convert(mode)
                        if image_size is not None and im.size != (image_size, image_size):
                            im = im.resize((image_size, image_size), Image.BILINEAR)
                        a = np.asarray(im, dtype=np.uint8)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise ValueError(f"{path}: image {key} is too large to decode ({first_line(e, 120)})") from None
            except MemoryError:
                raise ValueError(f"{path}: image {key} is too large to decode") from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError,
                    IndexError, KeyError, struct.error, zlib.error) as e:
                raise ValueError(f"{path}: cannot decode image {key}: {first_line(e, 120)}") from None
            if ref is None:
                ref = (im.size, key)
            elif im.size != ref[0]:
                raise ValueError(f"{path}: image {key} is {im.size[0]}x{im.size[1]} but {ref[1]} is "
                                 f"{ref[0][0]}x{ref[0][1]}; set image_size to resize all images")
            if x is None:
                x = np.empty((len(keys), a.shape[0], a.shape[1], n_ch), dtype=np.uint8)
            x[i] = a.reshape(a.shape[0], a.shape[1], n_ch)
            y[i] = label
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    if channels == "auto" and all_gray:
        for split in SPLITS:
            arrays[f"x_{split}"] = np.ascontiguousarray(arrays[f"x_{split}"][..., :1])
    arrays["class_names"] = np.array(classes)
    return arrays


def read_image_folder(path: Path, image_size: Optional[int] = None, channels: str = "auto",
                      cache: bool = True) -> Tuple[Dict[str, np.ndarray], bool]:
    """Decoded ``x_train``/``x_test`` (N, H, W, C) uint8, ``y_*`` int64 and ``class_names``.

    Returns the arrays and whether they came from the cache.

    Raises:
        ValueError: missing path or split folder, empty class folder, undecodable image,
            images of different sizes, or train/test class lists that differ.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"image folder or archive not found: {path}")
    is_archive = path.is_file()
    if is_archive and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise ValueError(f"{path} is a file but not a .tar, .tar.gz or .tgz archive")
    key = None
    if cache:
        key = cache_key("imagefolder", source_fingerprint(path), {"image_size": image_size, "channels": channels})
        hit = load_cached(key)
        if hit is not None and {"x_train", "y_train", "x_test", "y_test", "class_names"} <= set(hit):
            return hit, True
    dirs, files = _scan_archive(path) if is_archive else _scan_directory(path)
    arrays = _decode(path, _layout(path, dirs, files), files, image_size, channels)
    if cache and key is not None:
        save_cached(key, arrays)
    return arrays, False


@DATASETS.register("imagefolder", params=ImageFolderParams)
def load_imagefolder(params: ImageFolderParams, seed: int) -> DataBundle:
    """Load an ImageFolder tree (directory or archive) as float images in [0, 1]."""
    if params.stream:
        return _stream_imagefolder(params, seed)
    arrays, cached = read_image_folder(Path(params.path), params.image_size, params.channels, params.cache)
    x_train = to_float_tensor(arrays["x_train"].transpose(0, 3, 1, 2), "train images")
    x_test = to_float_tensor(arrays["x_test"].transpose(0, 3, 1, 2), "test images")
    y_train, y_test = torch.from_numpy(arrays["y_train"]), torch.from_numpy(arrays["y_test"])
    names = [str(c) for c in arrays["class_names"]]
    return make_bundle("imagefolder", x_train, y_train, x_test, y_test, params, seed, class_names=names,
                       info={"source": str(params.path), "from_cache": cached,
                             "images": {"train": int(x_train.shape[0]), "test": int(x_test.shape[0])}})


def _stream_imagefolder(params: ImageFolderParams, seed: int) -> DataBundle:
    from PIL import Image

    from .cache import cache_dir
    from .stream import FileSource, make_stream_bundle, tar_offsets, uncompressed_copy

    path = Path(params.path).expanduser()
    if not path.exists():
        raise ValueError(f"image folder or archive not found: {path}")
    if path.is_file():
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"{path} is a file but not a .tar, .tar.gz or .tgz archive")
        tar = path
        if not path.name.lower().endswith(".tar"):
            key = cache_key("imagefolder-tar", source_fingerprint(path), {}).replace(".npz", ".tar")
            tar = uncompressed_copy(path, cache_dir() / key)
        entries = tar_offsets(tar)
        dirs: List[str] = []
    else:
        dirs, readers = _scan_directory(path)
        entries = {k: str(path / k) for k in readers}
    layout = _layout(path, dirs, entries)
    classes = list(layout["train"])
    first = entries[layout["train"][classes[0]][0]]
    raw = Path(first).read_bytes() if isinstance(first, str) else FileSource([first], (1, 1, 1), None)._bytes(first)
    with Image.open(io.BytesIO(raw)) as im:
        gray = len(im.getbands()) == 1 or im.mode in ("LA", "La")
        w, h = im.size
    c = 1 if params.channels == "gray" or (params.channels == "auto" and gray) else 3
    if params.image_size is not None:
        w = h = params.image_size
    srcs, ys = {}, {}
    for split in SPLITS:
        keys = [(k, label) for label, cl in enumerate(classes) for k in layout[split][cl]]
        srcs[split] = FileSource([entries[k] for k, _ in keys], (c, h, w), params.image_size)
        ys[split] = torch.tensor([label for _, label in keys], dtype=torch.long)
    return make_stream_bundle("imagefolder", srcs["train"], ys["train"], srcs["test"], ys["test"], params, seed,
                              class_names=classes, info={"source": str(params.path)}, workers=params.workers)
