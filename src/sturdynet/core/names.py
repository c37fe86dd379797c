"""Names that become file names, and "did you mean" hints for names that are not known.

Recipe and variant names end up as paths (``runs/<recipe>/``, ``variants/<name>.pt``),
so they are validated once, here, against a small safe character set: no separators,
no ``..``, no leading dot or dash, nothing empty or blank. Every place that rejects an
unknown name (registries, recipe keys, parameter keys, class folders) suggests the
nearest known ones with :func:`nearest_hint` instead of listing everything.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, List

from .params import ConfigError

#: letters, digits and ``. _ - + = @``; starts with a letter or digit; at most 100 characters
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,99}")
_SAFE_TEXT = "letters, digits and . _ - + = @, starting with a letter or digit, at most 100 characters"


def safe_name(value: Any, field: str) -> str:
    """Return ``value`` when it is safe to use as one file or folder name.

    Args:
        value: the name from a recipe or the command line.
        field: the field path used in the error (``variants[2].name``).

    Raises:
        ConfigError: one line naming ``field`` when the name is not a string, is empty or
            blank, holds a path separator, ``..``, a control character, or anything outside
            the safe set.
    """
    if not isinstance(value, str):
        raise ConfigError(field, f"must be a string, got {value!r}")
    if not value.strip():
        raise ConfigError(field, "must not be empty or blank")
    if "/" in value or "\\" in value:
        raise ConfigError(field, f"must not contain a path separator, got {value!r}")
    if ".." in value:
        raise ConfigError(field, f"must not contain '..', got {value!r}")
    if not SAFE_NAME.fullmatch(value):
        raise ConfigError(field, f"{value!r} is not a safe name ({_SAFE_TEXT})")
    return value


def nearest(name: Any, choices: Iterable[Any], n: int = 3) -> List[str]:
    """Up to ``n`` of ``choices`` closest to ``name`` (difflib ratio >= 0.5)."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)


def nearest_hint(name: Any, choices: Iterable[Any], listing: str = "`sturdynet list` shows them",
                 max_listed: int = 12) -> str:
    """``did you mean a, b?`` when some choice is close, the whole list when it is short,
    else a count and where to look (``listing``); never more than one line."""
    choices = sorted({str(c) for c in choices})
    close = nearest(name, choices)
    if close:
        return f"did you mean {', '.join(close)}?"
    if not choices:
        return "none known"
    if len(choices) <= max_listed:
        return f"known: {', '.join(choices)}"
    return f"{len(choices)} known; {listing}"


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text, without terminal escape codes, at most ``limit``
    characters (library messages can span lines or carry ANSI colour codes)."""
    text = _ANSI.sub("", str(err)).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def os_error_text(err: OSError, action: str = "writing") -> str:
    """One line for an I/O failure: ``no space left on device writing runs/x/results.json``.

    Errors raised deep inside a library (a C++ stream's ``basic_ios::clear``) carry no file
    name; callers that know it pass it via ``err.filename``.
    """
    import errno

    where = f" {action} {err.filename}" if getattr(err, "filename", None) else ""
    if err.errno == errno.ENOSPC:
        return f"no space left on device{where}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}" if err.errno != errno.EROFS else f"read-only file system{where}"
    if err.errno == errno.EDQUOT:
        return f"disk quota exceeded{where}"
    text = err.strerror or first_line(err)
    return f"{text}{where}"
