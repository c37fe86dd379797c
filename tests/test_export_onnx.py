"""ONNX export (issue 13 part 4): the exported graphs run in ONNX Runtime and agree with sturdynet's
forward pass on the digits test split; the int8 graph stores int8 weight initializers and ONNX
Runtime executes its convolutions as QLinearConv; sub-8-bit and binary variants export with
dequantized weights (plus the packed file from the command line)."""
from __future__ import annotations

import pytest
import torch

from sturdynet.core.method import run_steps
from sturdynet.core.params import Component, component
from sturdynet.core.registry import METHODS
from sturdynet.models.small_cnn import SmallCNNParams
from sturdynet.train import TrainConfig
from sturdynet.train.context import training_context

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install 'sturdynet[onnx]')")
pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'sturdynet[onnx]')")
pytest.importorskip("onnxruntime", reason="the agreement test needs onnxruntime (pip install 'sturdynet[onnx]')")

from sturdynet.export.onnx import export_onnx, initializer_types, plan, run_onnxruntime  # noqa: E402

SHAPE = (1, 8, 8)


def variant(model, data, **spec):
    step = component(METHODS, spec, "step", key="method")
    out = run_steps(model, [step], training_context(data, TrainConfig(epochs=1), seed=0))
    return out.eval(), step


def agreement(model, path, data) -> float:
    got = run_onnxruntime(path, data.test.x)
    with torch.no_grad():
        ref = model.eval()(data.test.x)
    return float((got.argmax(1) == ref.argmax(1)).float().mean())


def test_uniform_quantizer_exports_without_data_dependent_branches(trained_cnn, digits):
    q, _ = variant(trained_cnn, digits, method="quant.uniform", bits=4, act_bits=4)
    x = digits.test.x[:16]
    ep = torch.export.export(q, (x,))  # failed on bool(self.signed) before
    with torch.no_grad():
        assert torch.equal(ep.module()(x), q(x))


def test_float_pruned_int8_and_int4_agree_with_sturdynet(trained_cnn, digits, tmp_path):
    pruned, _ = variant(trained_cnn, digits, method="prune.global_magnitude", sparsity=0.8)
    int8, _ = variant(trained_cnn, digits, method="quant.uniform", bits=8, act_bits=8)
    int4, _ = variant(trained_cnn, digits, method="quant.uniform", bits=4, act_bits=4)
    results = {}
    for name, model in (("float", trained_cnn), ("pruned", pruned), ("int8", int8), ("int4", int4)):
        path = tmp_path / f"{name}.onnx"
        results[name] = export_onnx(model, path, SHAPE)
        acc = agreement(model, path, digits)
        assert acc >= 0.995, (name, acc)
    assert results["float"]["format"] == "float" and results["pruned"]["format"] == "float"
    assert results["int4"]["format"] == "dequantized" and results["int4"]["dequantized"]

    # int8: every quantized layer's weight is an int8 initializer (no float copy of it)
    info = results["int8"]
    assert info["format"] == "int8" and info["int8_weights"] and info["int8_inputs"] == info["int8_weights"]
    types = initializer_types(tmp_path / "int8.onnx")
    for layer in info["int8_weights"]:
        assert types[f"{layer}.weight_quantized"] == "INT8"
        assert f"{layer}.weight" not in types
    assert all(v != "INT8" for k, v in initializer_types(tmp_path / "int4.onnx").items())
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == len(info["int8_inputs"]) and "DequantizeLinear" in ops

    # ONNX Runtime fuses the QDQ groups into integer convolutions
    run_onnxruntime(tmp_path / "int8.onnx", digits.test.x[:4], optimized_path=tmp_path / "int8.ort.onnx")
    fused = [n.op_type for n in onnx.load(str(tmp_path / "int8.ort.onnx")).graph.node]
    assert "QLinearConv" in fused, sorted(set(fused))


def test_plan_by_quantizer(trained_cnn, digits):
    assert plan(trained_cnn)["format"] == "float"
    w8, _ = variant(trained_cnn, digits, method="quant.uniform", bits=8)
    assert plan(w8)["format"] == "int8" and plan(w8)["int8_inputs"] == []
    b, _ = variant(trained_cnn, digits, method="binarize")
    assert plan(b)["format"] == "dequantized"


def test_cli_export_onnx_binary_writes_graph_and_packed_file(trained_cnn, digits, tmp_path, capsys):
    from sturdynet.cli import main
    from sturdynet.models.arch import arch_of
    from sturdynet.run.checkpoint import save_checkpoint

    model, step = variant(trained_cnn, digits, method="binarize")
    save_checkpoint(tmp_path / "binary.pt", model, arch_of(Component("small_cnn", SmallCNNParams(width=8)), digits,
                                                           [step]))
    assert main(["export", str(tmp_path / "binary.pt"), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "dequantized weights for 3 sub-8-bit/binary layers" in out and "binary.sturdy" in out
    assert "verify: onnxruntime top-1 agrees with the checkpoint model on 100.0%" in out
    assert (tmp_path / "binary.onnx").is_file() and (tmp_path / "binary.sturdy").is_file()
    ops = {n.op_type for n in onnx.load(str(tmp_path / "binary.onnx")).graph.node}
    assert "Sign" in ops  # binary activations as float operators
