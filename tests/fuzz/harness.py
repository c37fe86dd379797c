"""What every fuzz example asserts, and the random corruptions they share.

Each example runs the command line in-process (``sturdynet.cli.main(argv)``) inside a
fresh sandbox folder (two levels deep, so an escape by ``..`` lands in a watched
folder) and checks:

- the exit code is 0 or 2; with 2, stderr is exactly one line ``sturdynet: error: ...``;
- no traceback on stderr;
- no file appears outside the allowed folders (the run folder, the named outputs);
- every results.json written is strict JSON (no NaN / Infinity).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Set, Tuple

from hypothesis import strategies as st

from sturdynet.cli import main


def files_under(root: Path) -> Set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@contextlib.contextmanager
def sandbox(base: Path) -> Iterator[Path]:
    """A fresh ``base/<n>/outer/cwd`` folder as the working directory; yields ``cwd``."""
    n = len(list(base.iterdir())) if base.exists() else 0
    cwd = base / str(n) / "outer" / "cwd"
    cwd.mkdir(parents=True)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        yield cwd
    finally:
        os.chdir(old)


def strict_json(path: Path) -> None:
    def refuse(tok):
        raise AssertionError(f"{path}: non-standard JSON constant {tok}")
    json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def run_and_check(argv: Sequence[str], capsys, cwd: Path, allowed: Iterable[Path]) -> Tuple[int, str]:
    """Run the CLI and assert the invariants above; returns (exit code, stderr)."""
    watched = cwd.parent.parent  # base/<n>: anything written by escaping cwd with ../.. lands here
    before = files_under(watched)
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code in (0, 2), f"exit {code}: {err.strip()[-500:]}"
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("sturdynet: error: "), repr(err[-800:])
    allowed = [Path(a).resolve() for a in allowed]
    for p in files_under(watched) - before:
        rp = p.resolve()
        assert any(rp == a or a in rp.parents for a in allowed), f"wrote {p} outside {allowed}"
        if p.name == "results.json":
            strict_json(p)
    return code, err


# -- corruption of bytes --------------------------------------------------------------------------
@st.composite
def corruptions(draw) -> List[Tuple[str, float, int]]:
    """A short list of (kind, position in [0, 1), byte) edits; may be empty (the intact file)."""
    kinds = st.sampled_from(["flip", "truncate", "insert", "delete", "zero", "append"])
    edit = st.tuples(kinds, st.floats(0, 1, exclude_max=True), st.integers(0, 255))
    return draw(st.lists(edit, max_size=3))


def corrupt(raw: bytes, edits: List[Tuple[str, float, int]]) -> bytes:
    b = bytearray(raw)
    for kind, where, byte in edits:
        i = int(where * len(b)) if b else 0
        if kind == "flip" and b:
            b[i] ^= (byte or 1)
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes([byte])
        elif kind == "delete" and b:
            del b[i]
        elif kind == "zero" and b:
            b[i:i + 64] = bytes(len(b[i:i + 64]))
        elif kind == "append":
            b += bytes(random.Random(byte).getrandbits(8) for _ in range(byte))
    return bytes(b)


#: values that probe types and ranges without making a valid run expensive
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from([-1, 0, 1, 2, 10 ** 12, 2 ** 64, -(2 ** 63)]),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 0.5, 1e-3, 3.0]),
    st.sampled_from(["", " ", "..", "../../../X", "/tmp/x", "a/b", "x\x00y", "inf", "nan", "8/255", "é",
                     "dense", "clean", "pgd", "mlp", "digits", "1e12", "\t", "a" * 300]),
    st.lists(st.sampled_from([0, 1, 0.1, "x", None, float("nan")]), max_size=3),
    st.dictionaries(st.sampled_from(["name", "x", "bits", "eps"]), st.sampled_from([0, "x", None]), max_size=2),
)


def examples(ci: int):
    """``@settings`` with ``ci`` examples under the CI profile (the bench profile keeps its own count)."""
    import os

    from hypothesis import settings

    if os.environ.get("STURDYNET_FUZZ_PROFILE", "ci") == "ci":
        return settings(max_examples=ci)
    return settings()
