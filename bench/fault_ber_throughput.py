"""Fault-injection throughput: sturdynet's vectorized bit flips against pytorchfi.

Both tools produce a faulty copy of a float32 resnet20 (CIFAR shape, random weights)
with K single-bit faults at uniformly random (weight, bit) positions of its float32
weights; the time includes copying the model and flipping. sturdynet's time also
includes drawing the K distinct positions; pytorchfi gets its locations precomputed
(vectorized, untimed) and its injector built once (untimed), its best case. pytorchfi (0.6.0, ``declare_weight_fi`` with a bit-flip ``function``, the way
its users inject bit errors) loops over faults in Python; sturdynet draws all positions
at once and XORs each layer's int32 view in one operation.

Usage:
    pip install --no-deps pytorchfi
    OMP_NUM_THREADS=1 python bench/fault_ber_throughput.py > bench/logs/fault_ber_throughput.log 2>&1
"""
from __future__ import annotations

import json
import statistics
import struct
import sys
import time

import torch
from torch import nn

from sturdynet.faults import BitErrors, BitView, RandomFlips, ViewParams, deploy
from sturdynet.models.common import build_model


def pfi_setup(model: nn.Module, k: int, gen: torch.Generator):
    """A pytorchfi injector plus K random (conv layer, k, c, h, w, bit) locations (not timed)."""
    from pytorchfi.core import fault_injection

    pfi = fault_injection(model, 1, input_shape=[3, 32, 32], layer_types=[nn.Conv2d], use_cuda=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    sizes = torch.tensor([m.weight.numel() for m in convs], dtype=torch.float64)
    layer = torch.multinomial(sizes, k, replacement=True, generator=gen)
    shapes = torch.tensor([list(m.weight.shape) for m in convs])[layer]  # (k, 4)
    idx = (torch.rand(k, 4, generator=gen) * shapes).long()
    bits = torch.randint(0, 32, (k,), generator=gen).tolist()
    return pfi, [layer.tolist()] + [idx[:, d].tolist() for d in range(4)], bits


def pfi_inject(pfi, locs, bits):
    """pytorchfi's weight injection with a float32 bit-flip function (timed)."""
    it = iter(bits)

    def flip(weight, idx):
        v = weight[idx].item()
        (i,) = struct.unpack("I", struct.pack("f", v))
        return struct.unpack("f", struct.pack("I", i ^ (1 << next(it))))[0]

    return pfi.declare_weight_fi(function=flip, layer_num=locs[0], k=locs[1], dim1=locs[2], dim2=locs[3],
                                 dim3=locs[4])


def timed(fn, reps: int = 3) -> float:
    ts = []
    for r in range(reps):
        t0 = time.perf_counter()
        fn(r)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", 3, 10, (32, 32)).eval()
    view = ViewParams(float_layers="float32")
    base = deploy(model, view)
    nbits = BitView(base).total_bits
    rows = []
    for k in (10, 100, 1000, 10000):
        ours = timed(lambda r: RandomFlips(k, float_layers="float32").inject(base, torch.Generator().manual_seed(r)))
        setups = [pfi_setup(model, k, torch.Generator().manual_seed(r)) for r in range(3)]
        theirs = timed(lambda r: pfi_inject(*setups[r]))
        rows.append({"faults": k, "sturdynet_s": ours, "pytorchfi_s": theirs, "speedup": theirs / ours})
        print(json.dumps(rows[-1]), flush=True)
    ber = []
    for rate in (1e-6, 1e-5, 1e-4, 1e-3):
        t = timed(lambda r: BitErrors(rate, float_layers="float32").inject(base, torch.Generator().manual_seed(r)))
        ber.append({"ber": rate, "expected_faults": rate * nbits, "sturdynet_s": t})
        print(json.dumps(ber[-1]), flush=True)
    json.dump({"stored_bits": nbits, "threads": torch.get_num_threads(), "fixed_count": rows, "ber": ber},
              sys.stdout if len(sys.argv) < 2 else open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
