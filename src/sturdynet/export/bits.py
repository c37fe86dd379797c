"""Bit packing: k-bit unsigned codes to a dense little-endian uint8 stream and back.

Code ``i`` occupies bits ``[i*k, (i+1)*k)`` of the stream, least significant bit
first (bit ``j`` of the stream is bit ``j % 8`` of byte ``j // 8``), so ``n`` codes of
``k`` bits take exactly ``ceil(n*k / 8)`` bytes. Masks are 1-bit codes.
"""
from __future__ import annotations

import torch
from torch import Tensor


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes used by ``n`` codes of ``bits`` bits."""
    return (n * bits + 7) // 8


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack integer codes in ``[0, 2**bits)`` (any shape, read flat) into uint8.

    Raises:
        ValueError: on a bit width outside 1..32 or a code out of range.
    """
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    c = codes.detach().reshape(-1).to("cpu", torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 2 ** bits):
        raise ValueError(f"codes must lie in [0, {2 ** bits - 1}] for {bits} bits, "
                         f"got [{int(c.min())}, {int(c.max())}]")
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((c.unsqueeze(1) >> shifts) & 1).to(torch.uint8).reshape(-1)
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, torch.zeros(pad, dtype=torch.uint8)])
    weights = (1 << torch.arange(8, dtype=torch.int64))
    return (stream.view(-1, 8).to(torch.int64) * weights).sum(1).to(torch.uint8)


def unpack_bits(data: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of :func:`pack_bits`: ``n`` int64 codes from a uint8 stream."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    need = packed_nbytes(n, bits)
    if data.numel() < need:
        raise ValueError(f"{n} codes of {bits} bits need {need} bytes, got {data.numel()}")
    d = data.reshape(-1)[:need].to(torch.int64)
    stream = ((d.unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)[: n * bits]
    return (stream.view(n, bits) << torch.arange(bits, dtype=torch.int64)).sum(1)
