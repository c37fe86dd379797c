"""``sturdynet export CHECKPOINT [-o model.sturdy | --format onnx]``: write a bit-packed model file
or an ONNX graph.

Reads a checkpoint written by ``sturdynet train`` / ``sturdynet run`` (``base.safetensors`` or
``variants/<name>.safetensors``; older ``.pt`` checkpoints too), writes the packed file (:mod:`sturdynet.export.packed`),
reloads it and checks that its outputs equal the checkpoint model's bit for bit on a
seeded random batch (skip with ``--no-verify``; with ``--float16`` the check compares
against the float16-rounded model and is skipped). ``--inspect FILE`` prints what a
packed file holds.

``--format onnx`` writes an ONNX graph (:mod:`sturdynet.export.onnx`): int8 QDQ for 8-bit
uniform variants, the plain graph for float and pruned ones, and for sub-8-bit and binary
variants a graph with the dequantized weights *plus* the packed ``.sturdy`` file beside it
(their compact form). It then runs the graph in ONNX Runtime (when installed) on a seeded
random batch and compares the top-1 predictions with the checkpoint model's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.atomic import check_writable


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a bit-packed model file from a checkpoint",
                       description="Write a checkpoint as a packed file in which k-bit weights take k bits "
                                   "(binary 1, ternary 2), pruned tensors are stored sparse, and float "
                                   "tensors float32 (or float16). The file loads with "
                                   "sturdynet.export.load_packed.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint (.safetensors, or an older .pt) from `sturdynet train` or `sturdynet run`")
    p.add_argument("-o", "--out", help="output file (default: CHECKPOINT with suffix .sturdy, or .onnx)")
    p.add_argument("--format", choices=("packed", "onnx"), default="packed",
                   help="packed: sturdynet's bit-packed file (default); onnx: an ONNX graph (int8 QDQ for 8-bit "
                        "variants; sub-8-bit and binary variants: dequantized weights, plus the packed file)")
    p.add_argument("--float16", action="store_true", help="store float tensors as float16 (not bit-exact)")
    p.add_argument("--no-verify", action="store_true", help="skip the reload-and-compare check")
    p.add_argument("--inspect", metavar="FILE", help="print the contents of a packed file and exit")
    p.add_argument("--model-factory", metavar="PKG.MOD:FN", default="",
                   help="allow a checkpoint whose model is built by this factory to load")
    p.set_defaults(func=run)


def _inspect(path: str) -> int:
    from ..export.packed import read_packed

    blob = read_packed(path)
    arch = blob["arch"]
    label = arch["model"].get("name") or arch["model"].get("factory")
    print(f"{path}: model {label}, steps {[s.get('method') for s in arch.get('steps', [])]}, "
          f"payload {blob['payload'].numel()} bytes, floats {blob['float_dtype']}, "
          f"sha256 {blob.get('sha256') or 'none (version 1 file)'}")
    for e in blob["entries"]:
        kind = e["kind"] + (f"{e['bits']}" if "bits" in e else "")
        extra = f" sparse nnz={e['nnz']}" if e.get("sparse") else ""
        print(f"  {e['name']:<50} {str(tuple(e['shape'])):<20} {kind:<9} {e['data'][1]:>9} B{extra}")
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from ..export.packed import export_model, load_packed
    from ..core.storage import compression_facts
    from ..run.checkpoint import load_checkpoint

    if args.inspect:
        return _inspect(args.inspect)
    if not args.checkpoint:
        raise ValueError("give a CHECKPOINT to export (or --inspect FILE)")
    model, blob = load_checkpoint(args.checkpoint, trusted_factory=args.model_factory)
    if args.format == "onnx":
        return _onnx(args, model, blob)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".sturdy")
    check_writable(out)
    info = export_model(model, out, blob["arch"], float_dtype="float16" if args.float16 else "float32")
    size = compression_facts(model)["size_bytes"]
    print(f"wrote {out}: {info['file_bytes']} bytes on disk, weight payload {info['payload_bytes']} bytes "
          f"({info['packed']} packed, {info['sparse']} sparse of {info['tensors']} tensors); "
          f"size_bytes {size} ({(info['payload_bytes'] / max(1, size) - 1) * 100:+.2f}%); sha256 {info['sha256']}")
    if args.no_verify or args.float16:
        return 0
    try:
        loaded, _ = load_packed(out, trusted_factory=args.model_factory)
    except BaseException:
        out.unlink(missing_ok=True)  # never leave an unverified file behind
        raise
    d = blob["arch"]["data"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, d["in_channels"], *d["input_size"], generator=g)
    with torch.no_grad():
        same = torch.equal(model.eval()(x), loaded(x))
    if not same:
        out.unlink(missing_ok=True)  # never leave an unverified file behind
        print(f"sturdynet: error: verify failed: the reloaded model's outputs differ from the checkpoint's; "
              f"{out} removed", file=sys.stderr)
        return 1
    print("verify: reloaded outputs equal the checkpoint model's bit for bit")
    return 0


def _onnx(args: argparse.Namespace, model, blob) -> int:
    import torch

    from ..export.onnx import export_onnx

    d = blob["arch"]["data"]
    shape = (d["in_channels"], *d["input_size"])
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    info = export_onnx(model, out, shape)
    what = {"float": "float graph",
            "int8": f"int8 QDQ: {len(info['int8_weights'])} layers with int8 weights, {len(info['int8_inputs'])} "
                    f"with int8 inputs, BatchNorm folded into {len(info['folded_batchnorm'])}",
            "dequantized": f"dequantized weights for {len(info['dequantized'])} sub-8-bit/binary layers"}[info["format"]]
    print(f"wrote {out}: {info['file_bytes']} bytes, opset {info['opset']}, {what}")
    if info["format"] == "dequantized":
        from ..export.packed import export_model

        packed = out.with_suffix(".sturdy")
        pinfo = export_model(model, packed, blob["arch"])
        print(f"wrote {packed}: {pinfo['file_bytes']} bytes (ONNX has no sub-8-bit or binary weight type; the "
              "packed file is the compact form, the ONNX graph the portable one)")
    if args.no_verify:
        return 0
    try:
        from ..export.onnx import run_onnxruntime
        import onnxruntime  # noqa: F401
    except ImportError:
        print("verify: skipped (onnxruntime is not installed)")
        return 0
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, *shape, generator=g)
    with torch.no_grad():
        ref = model.eval()(x)
    got = run_onnxruntime(out, x)
    agree = float((got.argmax(1) == ref.argmax(1)).float().mean())
    diff = float((got - ref).abs().max())
    print(f"verify: onnxruntime top-1 agrees with the checkpoint model on {agree:.1%} of 64 random inputs "
          f"(max |logit difference| {diff:.3g})")
    return 0 if agree >= 0.95 else 1
