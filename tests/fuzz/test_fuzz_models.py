"""Fuzz model files: damaged checkpoints (evaluate, export) and packed files (inspect, load) (issue 14)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sturdynet.core.method import run_steps
from sturdynet.core.params import Component, component
from sturdynet.core.registry import DATASETS, METHODS
from sturdynet.data import load_data
from sturdynet.export.packed import export_model, load_packed
from sturdynet.models.arch import arch_of
from sturdynet.models.common import model_for_data
from sturdynet.models.mlp import MLPParams
from sturdynet.run.checkpoint import save_checkpoint

from .harness import corrupt, corruptions, run_and_check, sandbox

pytestmark = pytest.mark.fuzz

STEPS = {
    "dense": [],
    "int4": [{"method": "quant.uniform", "bits": 4}],
    "pruned": [{"method": "prune.global_magnitude", "sparsity": 0.7}],
    "binary": [{"method": "binarize", "epochs": 0}],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid checkpoint and packed file of each kind (bytes)."""
    root = tmp_path_factory.mktemp("models")
    data_spec = component(DATASETS, {"name": "digits", "subset": {"train": 60, "test": 16}, "val_fraction": 0.0},
                          "data")
    data = load_data(data_spec, 0)
    spec = Component("mlp", MLPParams(hidden=(8, 8)))
    out = {}
    for name, raw_steps in STEPS.items():
        torch.manual_seed(0)
        steps = [component(METHODS, s, "steps", key="method") for s in raw_steps]
        # binarize trains (it needs a training context): its structure is enough to fuzz the loaders
        model = run_steps(model_for_data(spec, data), steps, None, structure_only=name == "binary").eval()
        arch = arch_of(spec, data, steps, data_spec)
        save_checkpoint(root / f"{name}.safetensors", model, arch)
        export_model(model, root / f"{name}.sturdy", arch)
        out[name] = ((root / f"{name}.safetensors").read_bytes(), (root / f"{name}.sturdy").read_bytes())
    return out


@given(kind=st.sampled_from(sorted(STEPS)), edits=corruptions(), command=st.sampled_from(["evaluate", "export"]))
def test_fuzz_checkpoint(tmp_path, capsys, files, kind, edits, command):
    with sandbox(tmp_path) as cwd:
        (cwd / "m.safetensors").write_bytes(corrupt(files[kind][0], edits))
        if command == "evaluate":
            argv = ["-q", "evaluate", "m.safetensors", "--out", "out/metrics.json"]
        else:
            argv = ["-q", "export", "m.safetensors", "-o", "out/m.sturdy"]
        code, _ = run_and_check(argv, capsys, cwd, [cwd / "out"])
        if not edits:
            assert code == 0


@given(kind=st.sampled_from(sorted(STEPS)), edits=corruptions())
def test_fuzz_packed_file(tmp_path, capsys, files, kind, edits):
    with sandbox(tmp_path) as cwd:
        (cwd / "m.sturdy").write_bytes(corrupt(files[kind][1], edits))
        code, _ = run_and_check(["-q", "export", "--inspect", "m.sturdy"], capsys, cwd, [])
        try:
            model, blob = load_packed(cwd / "m.sturdy")
        except ValueError as e:  # the only error a damaged file may raise: one line naming the file
            assert str(cwd / "m.sturdy") in str(e) and "\n" not in str(e)
            assert "Traceback" not in str(e)
        else:
            assert code == 0
            x = torch.rand(2, 1, 8, 8)
            assert model(x).shape == (2, 10)
