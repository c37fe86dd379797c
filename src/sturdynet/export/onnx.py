"""ONNX export of float, pruned and quantized variants (``sturdynet export model.pt --format onnx``).

What the graph holds, by variant:

- **float and pruned** models: the plain graph (pruned weights are exact zeros in dense
  initializers; the pruning masks are training state and are not exported).
- **int8** (every quantized layer has an 8-bit :class:`~sturdynet.quant.uniform.UniformQuantizer`
  weight quantizer): each such weight is an ``int8`` initializer (the quantizer's integer
  codes, symmetric narrow range ``[-127, 127]``, zero point 0) followed by a
  ``DequantizeLinear`` with the per-channel (``axis=0``) or per-tensor step; an 8-bit
  activation quantizer in front of a layer becomes ``QuantizeLinear`` -> ``DequantizeLinear``
  on the layer's input (``uint8`` when the quantizer is unsigned, ``int8`` otherwise). This
  is the QDQ format of ONNX Runtime's quantization-aware execution: its graph optimizer fuses
  ``DQ -> Conv -> Q`` groups into ``QLinearConv`` (``QGemm`` / ``QLinearMatMul`` for linear
  layers), so the model runs with int8 arithmetic.
- **sub-8-bit, binary, ternary, LSQ, fixed-point** variants: ONNX has no operator for
  them, so the graph carries their *dequantized* weights as float initializers (the
  deployed values, bit for bit) and their activation quantizers as float operators
  (``Div``/``Round``/``Clip``/``Mul`` for uniform, ``Sign`` for binary). Compact storage of
  such a model is the packed ``.sturdy`` file (:mod:`sturdynet.export.packed`), which the
  command line writes next to the ``.onnx`` file.

Deviation from the PyTorch forward: ``QuantizeLinear`` saturates to ``[-128, 127]`` for a
signed 8-bit activation where sturdynet's narrow range stops at -127, and rounds
``x / scale`` in float32 as ORT implements it; both only matter for values at the clipping
edge or exactly between two steps. The agreement test measures it (top-1 agreement with
sturdynet's forward on the digits test split).

The graph comes from ``torch.onnx.export`` (the ``torch.export``-based exporter, without its
graph optimizer so that weight initializers keep their module names) with a dynamic batch
dimension; ``onnx`` and ``onnxscript`` must be installed (``pip install sturdynet[onnx]``).
"""
from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..quant.uniform import UniformQuantizer

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class _Int8Weight:
    name: str            # module name
    codes: np.ndarray    # int8
    scale: np.ndarray    # float32, (C,) or ()


@dataclass
class _Int8Input:
    name: str            # module name whose input is quantized
    scale: float
    signed: bool


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"ONNX export needs the onnx and onnxscript packages ({e.name} is missing): "
                          "pip install 'sturdynet[onnx]'") from None


def _is_int8_uniform(q: Any) -> bool:
    return type(q) is UniformQuantizer and q.bits == 8


def plan(model: nn.Module) -> Dict[str, Any]:
    """How each quantized layer of ``model`` exports: ``{"format": "float" | "int8" |
    "dequantized", "int8_weights": [names], "int8_inputs": [names], "dequantized": [names]}``.

    ``int8`` needs every weight quantizer to be 8-bit uniform (signed); otherwise the whole
    graph is ``dequantized`` (weights as their deployed float values).
    """
    layers = [(n, m) for n, m in model.named_modules() if getattr(m, "weight_quantizer", None) is not None]
    if not layers:
        return {"format": "float", "int8_weights": [], "int8_inputs": [], "dequantized": []}
    int8 = all(_is_int8_uniform(m.weight_quantizer) and bool(m.weight_quantizer.signed) for _, m in layers)
    inputs = [n for n, m in layers if int8 and _is_int8_uniform(getattr(m, "act_quantizer", None))]
    return {"format": "int8" if int8 else "dequantized",
            "int8_weights": [n for n, _ in layers] if int8 else [],
            "int8_inputs": inputs, "dequantized": [] if int8 else [n for n, _ in layers]}


@torch.no_grad()
def _export_twin(model: nn.Module) -> Tuple[nn.Module, List[_Int8Weight], List[_Int8Input], Dict[str, Any]]:
    """A copy of ``model`` whose quantized layers hold their deployed float weights (no weight
    quantizer) and, for the int8 format, no 8-bit input quantizer; plus what was taken out."""
    info = plan(model)
    twin = copy.deepcopy(model).cpu().eval()
    weights: List[_Int8Weight] = []
    inputs: List[_Int8Input] = []
    for name, m in twin.named_modules():
        q = getattr(m, "weight_quantizer", None)
        if q is None:
            continue
        q.grad_mode = "true"
        w = m.weight.detach()
        if name in info["int8_weights"]:
            codes = q.integers(w).to(torch.int8)
            scale = q.scale.detach().float()
            deployed = codes.float() * scale.view(-1, *([1] * (w.dim() - 1)))
            weights.append(_Int8Weight(name, codes.numpy(), scale.numpy() if q.per_channel else
                                       np.asarray(float(scale.reshape(-1)[0]), dtype=np.float32)))
            if getattr(m, "bias", False) is None:  # an explicit zero bias: an initializer a BatchNorm folds into
                m.bias = nn.Parameter(torch.zeros(w.shape[0]), requires_grad=False)
        else:
            deployed = q(w)
        m.weight = nn.Parameter(deployed.clone(), requires_grad=False)
        m.weight_quantizer = None
        if name in info["int8_inputs"]:
            aq = m.act_quantizer
            inputs.append(_Int8Input(name, float(aq.scale.reshape(-1)[0]), bool(aq.signed)))
            m.act_quantizer = None
    for mod in twin.modules():  # every remaining quantizer: its deployed forward
        if hasattr(mod, "grad_mode"):
            mod.grad_mode = "true"
    return twin, weights, inputs, info


def _consumers(graph, tensor: str) -> List[Any]:
    return [n for n in graph.node if tensor in n.input]


def _layer_node(graph, weight_name: str):
    """The Conv / Gemm / MatMul node that uses ``weight_name`` (through one Transpose at most)."""
    for node in _consumers(graph, weight_name):
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            return node
        if node.op_type == "Transpose":
            for nxt in _consumers(graph, node.output[0]):
                if nxt.op_type in ("Gemm", "MatMul"):
                    return nxt
    raise ValueError(f"ONNX export: no Conv/Gemm/MatMul uses the initializer {weight_name!r}")


def _constant(g, inits: Dict[str, Any], name: str) -> Optional[np.ndarray]:
    """The value of an initializer or of a Constant node's output (None if it is computed)."""
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] == name:
            attr = next((a for a in n.attribute if a.name == "value"), None)
            return numpy_helper.to_array(attr.t) if attr is not None else None
    return None


def _fold_batchnorm(g, w: _Int8Weight) -> bool:
    """Fold a BatchNormalization that alone consumes the int8 conv's output into the conv's
    per-channel weight scale and bias (the int8 codes stay as they are:
    ``W' = codes * (scale * gamma / sqrt(var + eps))``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``),
    so that the conv's output reaches the next QuantizeLinear and ONNX Runtime can fuse
    the group into ``QLinearConv``. Returns whether it folded."""
    from onnx import numpy_helper

    wname = f"{w.name}.weight"
    node = next((n for n in g.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] == wname), None)
    if node is None:
        return False
    users = _consumers(g, node.output[0])
    if len(users) != 1 or users[0].op_type != "BatchNormalization" or \
            any(o.name == node.output[0] for o in g.output):
        return False
    bn = users[0]
    inits = {i.name: i for i in g.initializer}
    if not all(name in inits for name in bn.input[1:5]):
        return False
    gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    factor = gamma / np.sqrt(var + eps)
    channels = w.codes.shape[0]
    scale = np.broadcast_to(w.scale.astype(np.float64), (channels,))
    bias = np.zeros(channels)
    if len(node.input) > 2 and node.input[2]:
        found = _constant(g, inits, node.input[2])
        if found is None:
            return False
        bias = found.astype(np.float64)
    w.scale = (scale * factor).astype(np.float32)
    new_bias = ((bias - mean) * factor + beta).astype(np.float32)
    bname = f"{w.name}.bias_folded"
    g.initializer.append(numpy_helper.from_array(new_bias, bname))
    if len(node.input) > 2:
        node.input[2] = bname
    else:
        node.input.append(bname)
    node.output[0] = bn.output[0]
    g.node.remove(bn)
    used = {i for n in g.node for i in n.input}
    for name in bn.input[1:5]:
        if name not in used and name in inits:
            g.initializer.remove(inits[name])
    return True


def _add_qdq(model_proto, weights: Sequence[_Int8Weight], inputs: Sequence[_Int8Input]) -> List[str]:
    """Turn the named float weight initializers into int8 + DequantizeLinear (folding a
    following BatchNormalization into the step and bias), and put QuantizeLinear ->
    DequantizeLinear on the inputs of the named layers (in place). Returns the layers whose
    BatchNormalization was folded."""
    from onnx import TensorProto, helper, numpy_helper

    g = model_proto.graph
    folded = [w.name for w in weights if _fold_batchnorm(g, w)]
    inits = {i.name: i for i in g.initializer}
    front: List[Any] = []
    for w in weights:
        wname = f"{w.name}.weight"
        if wname not in inits:
            raise ValueError(f"ONNX export: weight initializer {wname!r} not found in the exported graph")
        g.initializer.remove(inits[wname])
        per_channel = w.scale.ndim == 1
        g.initializer.extend([
            numpy_helper.from_array(w.codes, f"{wname}_quantized"),
            numpy_helper.from_array(w.scale.astype(np.float32), f"{wname}_scale"),
            numpy_helper.from_array(np.zeros(w.scale.shape, dtype=np.int8), f"{wname}_zero_point")])
        kw = {"axis": 0} if per_channel else {}
        front.append(helper.make_node("DequantizeLinear", [f"{wname}_quantized", f"{wname}_scale",
                                                           f"{wname}_zero_point"], [wname],
                                      name=f"{wname}_DequantizeLinear", **kw))
    for node in reversed(front):
        g.node.insert(0, node)
    for a in inputs:
        node = _layer_node(g, f"{a.name}.weight")
        x = node.input[0]
        base = f"{a.name}.input"
        zp_type = TensorProto.INT8 if a.signed else TensorProto.UINT8
        g.initializer.extend([numpy_helper.from_array(np.asarray(a.scale, dtype=np.float32), f"{base}_scale"),
                              helper.make_tensor(f"{base}_zero_point", zp_type, [], [0])])
        q = helper.make_node("QuantizeLinear", [x, f"{base}_scale", f"{base}_zero_point"], [f"{base}_quantized"],
                             name=f"{base}_QuantizeLinear")
        dq = helper.make_node("DequantizeLinear", [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                              [f"{base}_dequantized"], name=f"{base}_DequantizeLinear")
        idx = list(g.node).index(node)
        g.node.insert(idx, dq)
        g.node.insert(idx, q)
        node.input[0] = f"{base}_dequantized"
    return folded


def export_onnx(model: nn.Module, path: Union[str, Path], input_shape: Sequence[int]) -> Dict[str, Any]:
    """Write ``model`` as an ONNX file (see the module docstring for the format by variant).

    Args:
        model: a sturdynet model (float, pruned or quantized), taking images in [0, 1].
        path: the ``.onnx`` file to write.
        input_shape: one sample's shape ``(C, H, W)``; the batch dimension is dynamic.

    Returns:
        ``{"format", "int8_weights", "int8_inputs", "dequantized", "folded_batchnorm",
        "file_bytes", "opset"}``.

    Raises:
        ImportError: onnx / onnxscript are not installed.
    """
    _require_onnx()
    import onnx

    twin, weights, inputs, info = _export_twin(model)
    x = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
        levels = [lg.level for lg in quiet]
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(twin, (x,), dynamo=True, optimize=False, verbose=False,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=({0: batch},))
        finally:
            for lg, lv in zip(quiet, levels):
                lg.setLevel(lv)
    proto = program.model_proto
    folded = _add_qdq(proto, weights, inputs) if weights or inputs else []
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {**info, "folded_batchnorm": folded, "file_bytes": path.stat().st_size, "opset": opset}


def initializer_types(path: Union[str, Path]) -> Dict[str, str]:
    """``{initializer name: ONNX element type name}`` of an ONNX file (for checks and tests)."""
    import onnx

    g = onnx.load(str(path)).graph
    return {i.name: onnx.TensorProto.DataType.Name(i.data_type) for i in g.initializer}


def run_onnxruntime(path: Union[str, Path], x: torch.Tensor, batch_size: int = 256,
                    optimized_path: Optional[Union[str, Path]] = None) -> torch.Tensor:
    """Logits of the ONNX model on ``x`` with ONNX Runtime's CPU provider (all graph
    optimizations on; ``optimized_path`` saves the graph ORT actually runs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {INPUT_NAME: x[i:i + batch_size].float().numpy()})[0]
            for i in range(0, x.shape[0], batch_size)]
    return torch.from_numpy(np.concatenate(outs))
