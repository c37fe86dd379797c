"""Tar archives read as data: the end-of-archive marker is required.

``tarfile`` ends its member list silently at an empty, short or invalid header, so an
archive cut exactly at a member boundary would load with fewer images. Opening it with
``tarinfo=WatchedTarInfo`` records why the list ended; :func:`require_end_marker` turns
anything but the zero block that POSIX tar writes at the end into an error.
"""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Optional, Union


class WatchedTarInfo(tarfile.TarInfo):
    """Records on the archive (``tar.sturdynet_end``) why its member list ended: ``"marker"``
    (a zero block) or the name of the header error that ``tarfile`` swallowed."""

    @classmethod
    def fromtarfile(cls, tar):  # type: ignore[override]
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.sturdynet_end = "marker"
            raise
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as e:
            tar.sturdynet_end = type(e).__name__
            raise


def require_end_marker(path: Union[str, Path], end: Optional[str], members: int) -> None:
    """Raise a one-line ValueError unless the archive ended with its end-of-archive marker."""
    if end != "marker":
        raise ValueError(f"archive {path} is truncated or damaged: it ends after {members} members without the "
                         f"end-of-archive marker")
