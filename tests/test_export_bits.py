"""Bit packing of k-bit codes (known bytes, round trips, bad input)."""
from __future__ import annotations

import pytest
import torch

from sturdynet.export.bits import pack_bits, packed_nbytes, unpack_bits


def test_known_bytes():
    # 2-bit codes 1, 2, 3 -> bits (LSB first) 1,0 | 0,1 | 1,1 | pad -> 0b00111001 = 57
    assert pack_bits(torch.tensor([1, 2, 3]), 2).tolist() == [57]
    # 1-bit mask
    assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1).tolist() == [129, 1]
    # 3-bit codes straddle bytes: 5 = 101, 6 = 011 (LSB first) -> 1,0,1,0,1,1 -> 0b110101 = 53
    assert pack_bits(torch.tensor([5, 6]), 3).tolist() == [53]


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
def test_round_trip_and_size(bits):
    g = torch.Generator().manual_seed(bits)
    for n in (1, 7, 8, 1001):
        c = torch.randint(0, 2 ** bits, (n,), generator=g)
        p = pack_bits(c, bits)
        assert p.dtype == torch.uint8 and p.numel() == packed_nbytes(n, bits) == (n * bits + 7) // 8
        assert torch.equal(unpack_bits(p, bits, n), c)


def test_bad_input():
    with pytest.raises(ValueError, match="codes must lie"):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(ValueError, match="codes must lie"):
        pack_bits(torch.tensor([-1]), 2)
    with pytest.raises(ValueError, match="bits"):
        pack_bits(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="need"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 4, 3)
