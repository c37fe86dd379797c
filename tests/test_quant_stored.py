"""Each quantizer names its stored codes (quant.stored): integers, widths and signedness."""
from __future__ import annotations

import pytest
import torch

from sturdynet.quant.binary.quantizers import BinaryWeightQuantizer
from sturdynet.quant.fixed_point import FixedPointQuantizer
from sturdynet.quant.lsq import LSQQuantizer
from sturdynet.quant.stored import BinaryCodes, IntCodes, TernaryCodes
from sturdynet.quant.ternary import TTQQuantizer
from sturdynet.quant.uniform import UniformQuantizer


def _w(seed=0):
    return torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(seed))


def _stored(q, w):
    q.eval()
    with torch.no_grad():
        d = q(w)
    c = q.stored(w, d, "layer")
    return c, d, c.store(d, "layer")


def test_uniform_lsq_fixed_point_store_their_own_integers():
    w = _w()
    u = UniformQuantizer(4, channels=3, per_channel=True)
    u.calibrate(w)
    c, d, v = _stored(u, w)
    assert isinstance(c, IntCodes) and (c.kind, c.bits, c.signed) == ("int", 4, True)
    assert torch.equal(c.integers(v), u.integers(w).long()) and torch.equal(v, d)
    words = c.encode(v)
    assert int(words.min()) >= 0 and int(words.max()) < 16 and torch.equal(c.decode(words), v)
    lsq = LSQQuantizer(3)
    lsq.init_step(w)
    c, d, v = _stored(lsq, w)
    assert c.bits == 3 and torch.equal(v, d) and int(c.integers(v).min()) >= -4
    fx = FixedPointQuantizer(6)
    fx.init_frac(w)
    c, d, v = _stored(fx, w)
    assert c.bits == 6 and float(c.scale.reshape(-1)[0]) == 2.0 ** -fx.frac_bits and torch.equal(v, d)


def test_ternary_and_binary_codes():
    w = torch.tensor([[0.9, 0.0, -0.8, 0.02]])
    t = TTQQuantizer(0.05)
    with torch.no_grad():
        t.w_p.fill_(0.75)
        t.w_n.fill_(0.5)
    c, d, v = _stored(t, w)
    assert isinstance(c, TernaryCodes) and c.bits == 2
    assert c.integers(v).tolist() == [[1, 0, -1, 0]] and c.encode(v).tolist() == [[1, 0, 3, 0]]
    assert c.decode(torch.tensor([[2]])).tolist() == [[-1.0]]  # code 10 = -2 W_n
    b = BinaryWeightQuantizer(1)
    c, d, v = _stored(b, w)
    assert isinstance(c, BinaryCodes) and c.bits == 1 and torch.equal(v, d)
    assert c.encode(v).tolist() == [[1, 0, 0, 1]]


def test_integers_out_of_range_are_refused():
    c = IntCodes((1, 2), 4, torch.ones(1, 1))
    with pytest.raises(ValueError, match="range"):
        c.store(torch.tensor([[9.0, 0.0]]), "layer")
    with pytest.raises(ValueError, match="integer multiples"):
        c.store(torch.tensor([[0.5, 0.0]]), "layer")
