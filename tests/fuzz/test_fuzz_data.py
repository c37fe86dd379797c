"""Fuzz data files: generated .npz arrays and image-folder archives, then damaged bytes (issue 14)."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from .harness import corrupt, corruptions, run_and_check, sandbox

pytestmark = pytest.mark.fuzz

RECIPE = """name: fz
data: {{name: {name}, path: {path}, val_fraction: 0.0{extra}}}
model: {{name: mlp, hidden: [4]}}
train: {{epochs: 0}}
variants: [{{name: dense}}]
evaluate: [{{check: clean}}]
"""

DTYPES = ["uint8", "float32", "float64", "int32", "bool", "float16"]
SPECIAL = [np.nan, np.inf, -np.inf, -0.5, 1.5, 0.0, 1.0, 255.0]


@st.composite
def npz_arrays(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    k = draw(st.integers(1, 4))
    h = draw(st.sampled_from([1, 2, 3, 4]))
    c = draw(st.sampled_from([None, 1, 3, 2]))
    out = {}
    for split, n in (("train", draw(st.integers(0, 12))), ("test", draw(st.integers(0, 6)))):
        shape = (n, h, h) if c is None else (n, h, h, c)
        if draw(st.booleans()):
            shape = draw(st.sampled_from([(n,), (n, h), (n, 1, 1, 1, 1), shape]))
        dt = draw(st.sampled_from(DTYPES))
        x = rng.random(shape) if dt.startswith("float") else rng.integers(0, 256, shape)
        x = x.astype(dt)
        if x.size and dt.startswith("float") and draw(st.booleans()):
            x.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIAL))
        y = rng.integers(0, k, n)
        if n and draw(st.booleans()):
            y[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1, k, 1000, 2 ** 40]))
        out[f"x_{split}"], out[f"y_{split}"] = x, y.astype(draw(st.sampled_from(["int64", "uint8", "float32"])))
    if draw(st.booleans()):
        del out[draw(st.sampled_from(sorted(out)))]
    if draw(st.booleans()):
        out["class_names"] = np.array([f"c{i}" for i in range(draw(st.integers(0, 6)))])
    return out


_VALID = {"x_train": np.random.default_rng(0).random((12, 4, 4)).astype(np.float32), "y_train": np.arange(12) % 3,
          "x_test": np.random.default_rng(1).random((6, 4, 4)).astype(np.float32), "y_test": np.arange(6) % 3}


@given(arrays=npz_arrays(), edits=corruptions())
@example(arrays=_VALID, edits=[])  # a valid file: the run succeeds
def test_fuzz_npz(tmp_path, capsys, arrays, edits):
    with sandbox(tmp_path) as cwd:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (cwd / "d.npz").write_bytes(corrupt(buf.getvalue(), edits))
        (cwd / "r.yaml").write_text(RECIPE.format(name="npz", path="d.npz", extra=""))
        code, _ = run_and_check(["-q", "run", "r.yaml", "--out", "out"], capsys, cwd, [cwd / "out"])
        if arrays is _VALID and not edits:
            assert code == 0 and (cwd / "out" / "results.json").is_file()


def _image(kind: str, seed: int, size: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if kind == "junk":
        return bytes(rng.integers(0, 256, 40, dtype=np.uint8))
    if kind == "empty":
        return b""
    mode = {"png-l": "L", "png-rgb": "RGB", "png-rgba": "RGBA", "jpeg": "RGB"}[kind]
    arr = rng.integers(0, 256, (size, size) + (() if mode == "L" else (len(mode),)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="JPEG" if kind == "jpeg" else "PNG")
    return buf.getvalue()


NAMES = ["train/a/{i}.png", "train/b/{i}.png", "test/a/{i}.png", "test/b/{i}.png", "top/train/a/{i}.png",
         "../escape{i}.png", "/abs/{i}.png", "train/a/../../x{i}.png", "train/.hidden/{i}.png", "test/c/{i}.png",
         "train/a/{i}.txt", "train/a/sub/{i}.png"]


@st.composite
def archives(draw):
    members = []
    for i in range(draw(st.integers(0, 10))):
        name = draw(st.sampled_from(NAMES[:4] * 3 + NAMES[4:])).format(i=i)
        kind = draw(st.sampled_from(["png-l", "png-rgb", "png-rgba", "jpeg", "junk", "empty"]))
        size = draw(st.sampled_from([4, 4, 4, 5]))
        members.append((name, kind, size, draw(st.sampled_from(["file", "file", "file", "symlink", "dir"]))))
    return members, draw(st.sampled_from(["w", "w:gz"]))


@given(spec=archives(), edits=corruptions())
def test_fuzz_image_folder_archive(tmp_path, capsys, spec, edits):
    members, mode = spec
    with sandbox(tmp_path) as cwd:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            for j, (name, kind, size, typ) in enumerate(members):
                info = tarfile.TarInfo(name)
                if typ == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
                    tar.addfile(info)
                elif typ == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    data = _image(kind, j, size)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        suffix = ".tar.gz" if mode == "w:gz" else ".tar"
        (cwd / f"d{suffix}").write_bytes(corrupt(buf.getvalue(), edits))
        (cwd / "r.yaml").write_text(RECIPE.format(name="imagefolder", path=f"d{suffix}",
                                                  extra=", cache: false, image_size: 4"))
        run_and_check(["-q", "run", "r.yaml", "--out", "out"], capsys, cwd, [cwd / "out"])
