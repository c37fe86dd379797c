"""Fuzz a run folder between two runs: damaged results.json and checkpoints, then resume (issue 14)."""
from __future__ import annotations

import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sturdynet.cli import main

from .harness import corrupt, corruptions, examples, run_and_check, sandbox

pytestmark = pytest.mark.fuzz

RECIPE = """name: fz
data: {name: digits, subset: {train: 60, test: 20}, val_fraction: 0.0}
model: {name: mlp, hidden: [8]}
train: {epochs: 1, batch_size: 32}
variants: [{name: dense}, {name: int8, method: quant.uniform, bits: 8}]
evaluate: [{check: clean}]
"""
TARGETS = ["results.json", "base.safetensors", "variants/int8.safetensors", "report.md", "plots"]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    (root / "r.yaml").write_text(RECIPE)
    assert main(["-q", "run", str(root / "r.yaml"), "--out", str(root / "out")]) == 0
    return root / "out"


@examples(5)
@given(target=st.sampled_from(TARGETS), edits=corruptions(), second=st.sampled_from(["", "clean2"]))
def test_fuzz_resume(tmp_path, capsys, done_run, target, edits, second):
    with sandbox(tmp_path) as cwd:
        shutil.copytree(done_run, cwd / "out")
        p = cwd / "out" / target
        if p.is_dir():
            shutil.rmtree(p)
            p.write_bytes(corrupt(b"not a folder", edits))
        else:
            p.write_bytes(corrupt(p.read_bytes(), edits))
        text = RECIPE if not second else RECIPE.replace("[{check: clean}]", "[{check: clean}, {check: clean, id: c2}]")
        (cwd / "r.yaml").write_text(text)
        run_and_check(["-q", "run", "r.yaml", "--out", "out"], capsys, cwd, [cwd / "out"])
