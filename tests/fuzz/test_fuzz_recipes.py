"""Fuzz recipes: mutated fields, odd values, damaged YAML bytes (issue 14)."""
from __future__ import annotations

import copy
from typing import Any, List

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from .harness import ODD_VALUES, corrupt, corruptions, run_and_check, sandbox

pytestmark = pytest.mark.fuzz

BASE = {
    "name": "fz", "seed": 0,
    "data": {"name": "digits", "subset": {"train": 60, "test": 20}, "val_fraction": 0.0},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"epochs": 0, "batch_size": 32, "lr": 0.05},
    "variants": [{"name": "dense"}, {"name": "int8", "method": "quant.uniform", "bits": 8}],
    "evaluate": [{"check": "clean"}, {"check": "pgd", "eps": 0.1, "steps": 1, "samples": 8}],
}

#: places a mutation may hit (None: delete the key; a new key name: add it)
PATHS: List[List[Any]] = [
    ["name"], ["seed"], ["device"], ["data"], ["data", "name"], ["data", "subset", "train"], ["data", "val_fraction"],
    ["model"], ["model", "name"], ["model", "hidden"], ["train"], ["train", "lr"], ["train", "epochs"],
    ["train", "batch_size"], ["train", "momentum"], ["variants"], ["variants", 0, "name"], ["variants", 1, "name"],
    ["variants", 1, "bits"], ["variants", 1, "method"], ["variants", 1, "finetune_epochs"], ["evaluate"],
    ["evaluate", 0, "check"], ["evaluate", 1, "eps"], ["evaluate", 1, "steps"], ["evaluate", 1, "id"],
    ["evaluate", 1, "norm"], ["unknown_key"], ["train", "epoch"],
]


def _set(d: Any, path: List[Any], value: Any, delete: bool) -> None:
    for k in path[:-1]:
        try:
            d = d[k]
        except (KeyError, IndexError, TypeError):
            return
    try:
        if delete:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


mutation = st.tuples(st.sampled_from(range(len(PATHS))), ODD_VALUES, st.booleans())


@given(mutations=st.lists(mutation, min_size=1, max_size=3), edits=corruptions(), use_out=st.booleans())
@example(mutations=[(0, "dense", False)], edits=[], use_out=False)  # a valid run into runs/<name>
def test_fuzz_recipe(tmp_path, capsys, mutations, edits, use_out):
    r = copy.deepcopy(BASE)
    for i, value, delete in mutations:
        _set(r, PATHS[i], value, delete and i % 3 == 0)
    text = yaml.safe_dump(r, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")
    with sandbox(tmp_path) as cwd:
        (cwd / "r.yaml").write_bytes(corrupt(text, edits))
        argv = ["-q", "run", "r.yaml"] + (["--out", "out"] if use_out else [])
        code, _ = run_and_check(argv, capsys, cwd, [cwd / "out", cwd / "runs"])
        if mutations == [(0, "dense", False)] and not edits:
            assert code == 0 and (cwd / "runs" / "dense" / "results.json").is_file()
