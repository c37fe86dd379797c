"""Bit-level view of a model's stored weights: deploy, read, flip, compare.

A *deployed* model stores every conv/linear weight in one of four formats:

- ``int``: k-bit two's-complement integers ``q`` times a scale (``w = q * s``). Layers
  that are already quantized (``QuantConv2d`` / ``QuantLinear`` with a weight quantizer
  holding ``bits`` and a ``scale`` or ``step`` tensor; without one the step is
  max|W_c| / (2^(k-1) - 1)) keep their deployed integers and steps. Float layers
  are quantized per layer (or per output channel) with ``s = max|W| / (2^(k-1) - 1)``,
  the rounding-to-nearest quantizer of the Bit-Flip Attack paper (arXiv 1903.12269),
  when ``float_layers="int"``.
- ``binary``: one bit per weight, ``w = (2b - 1) * s`` (layers whose quantizer has
  ``bits == 1``; ``s`` is the per-channel magnitude, or per weight when magnitudes
  differ, e.g. 0 for pruned weights, whose flips then change nothing).
- ``ternary``: TTQ layers (arXiv 1612.01064), a 2-bit two's-complement code ``c`` per
  weight with the two learned scales, ``w = c * W_p`` for ``c > 0`` else ``c * W_n``
  (``10 = -2`` decodes to ``-2 W_n``; see :mod:`sturdynet.faults.ternary_store`).
- ``float32``: the IEEE-754 single-precision pattern of the weight (via an int32 view).
- ``float16``: the weight rounded to IEEE half precision; the pattern is its int16 view.

:func:`deploy` returns a deep copy in which every weight tensor *holds* its decoded
stored value and each quantized layer's quantizer is replaced by :class:`StoredWeights`
(identity forward, remembers format, bits and scale), so a flipped integer such as
``-2^(k-1)`` is used exactly as stored instead of being re-clamped by a training-time
quantizer. :class:`BitView` addresses the bits of a deployed model: words, flips (by
element and bit, or by global bit position), and :func:`hamming_distance`.

Only conv and linear weights are addressed (the attack surface of the BFA paper);
biases, batch-norm parameters and pruning masks are not. Storage is taken as dense: a
flip may hit a pruned (zero) weight.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.params import rng
from ..quant.layers import QuantConv2d, QuantLinear, _quant_copy
from ..quant.base import Quantizer
from ..quant.ternary import TTQQuantizer
from .ternary_store import ternary_bit_steps, ternary_codes, ternary_scale, ternary_values

KINDS = ("int", "binary", "ternary", "float32", "float16")
FloatLayers = Literal["int", "float32", "float16", "skip"]


@dataclass(frozen=True)
class ViewParams:
    """How weights are stored, shared by the fault checks and fault models.

    ``bits`` and ``per_channel`` apply to float (not yet quantized) layers stored as
    integers (``float_layers: int``, the BFA paper's 8-bit setting); already quantized
    layers always keep their own integers. ``float_layers: skip`` leaves float layers out
    of the view (only quantized layers can be hit).
    """

    bits: int = rng(2, 16, default=8)
    float_layers: FloatLayers = "int"
    per_channel: bool = False


class StoredWeights(Quantizer):
    """The quantizer of a deployed layer: the weight tensor already holds the stored values.

    Args:
        kind: ``int``, ``binary``, ``ternary`` or ``float16``.
        bits: bits per stored weight.
        scale: step (``int``) or magnitude (``binary``), broadcastable to the weight;
            ``(W_n, W_p)`` for ``ternary``.
    """

    def __init__(self, kind: str, bits: int, scale: Optional[Tensor] = None) -> None:
        super().__init__()
        if kind not in ("int", "binary", "ternary", "float16"):
            raise ValueError(f"StoredWeights kind must be int, binary, ternary or float16, got {kind!r}")
        self.kind = kind
        self.bits = int(bits)
        self.register_buffer("scale", torch.ones(1) if scale is None else scale.detach().clone().float())

    def quantize(self, w: Tensor) -> Tensor:
        return w

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}"


@dataclass
class Site:
    """One addressable weight tensor."""

    name: str
    module: nn.Module
    kind: str
    bits: int
    numel: int
    offset: int = 0  # first global bit position

    @property
    def nbits(self) -> int:
        return self.numel * self.bits


def weight_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every Conv2d / Linear in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _broadcast_scale(scale: Tensor, w: Tensor, name: str) -> Tensor:
    s = scale.detach().float().to(w.device)
    if s.numel() == 1:
        return s.reshape([1] * w.dim())
    if s.numel() == w.shape[0]:
        return s.reshape(-1, *([1] * (w.dim() - 1)))
    if s.shape == w.shape:
        return s
    raise ValueError(f"layer {name}: quantizer scale of shape {tuple(s.shape)} does not broadcast to "
                     f"weight {tuple(w.shape)}")


def _binary_magnitude(wd: Tensor) -> Tensor:
    mag = wd.abs().flatten(1).amax(1).reshape(-1, *([1] * (wd.dim() - 1)))
    return mag if torch.equal(wd.abs(), mag.expand_as(wd)) else wd.abs()


def _deploy_quantized(name: str, m: nn.Module) -> None:
    q = m.weight_quantizer
    bits = int(q.bits)
    with torch.no_grad():
        was = q.training
        q.eval()
        wd = m.qweight().detach().float()
        q.train(was)
        if isinstance(q, TTQQuantizer):
            scale = ternary_scale(q.w_n, q.w_p, name)
            values = ternary_values(q.ternary(m.weight.detach()), scale)
            if not torch.equal(values, wd):
                raise ValueError(f"layer {name}: deployed TTQ weights are not the codes times W_p / W_n")
            m.weight.data.copy_(values)
            m.weight_quantizer = StoredWeights("ternary", 2, scale)
            return
        if bits == 1:
            # Zero (pruned) weights get magnitude 0, so flipping their bit changes nothing.
            scale = _binary_magnitude(wd)
            m.weight.data.copy_(torch.where(wd > 0, 1.0, -1.0) * scale)
            m.weight_quantizer = StoredWeights("binary", 1, scale)
            return
        qmax = 2 ** (bits - 1) - 1
        scale = next((t for t in (getattr(q, a, None) for a in ("scale", "step")) if isinstance(t, Tensor)), None)
        if scale is None:  # no step stored: the largest magnitude per channel maps to qmax
            scale = torch.clamp(wd.abs().flatten(1).amax(1), min=1e-12) / qmax
        s = _broadcast_scale(scale, wd, name).abs()
        ints = torch.round(wd / s)
        if float((wd - ints * s).abs().max()) > 1e-4 * float(s.max()) + 1e-12:
            raise ValueError(f"layer {name}: deployed weights are not integer multiples of one step per channel; "
                             "cannot read them as two's-complement integers")
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        if float(ints.min()) < lo or float(ints.max()) > hi:
            raise ValueError(f"layer {name}: integers leave the {bits}-bit two's-complement range [{lo}, {hi}]")
        m.weight.data.copy_(ints * s)
        m.weight_quantizer = StoredWeights("int", bits, s)


def _float_quantizer(m: nn.Module, params: ViewParams) -> StoredWeights:
    w = m.weight.detach().float()
    qmax = 2 ** (params.bits - 1) - 1
    if params.float_layers == "float16":
        return StoredWeights("float16", 16)
    if params.per_channel:
        mx = w.abs().flatten(1).amax(1).reshape(-1, *([1] * (w.dim() - 1)))
    else:
        mx = w.abs().max().reshape([1] * w.dim())
    return StoredWeights("int", params.bits, torch.clamp(mx, min=1e-12) / qmax)


def deploy(model: nn.Module, params: ViewParams = ViewParams()) -> nn.Module:
    """A deep copy whose conv/linear weights hold their stored (deployed) values.

    Already deployed layers are kept as they are, so deploying twice changes nothing.

    Raises:
        ValueError: a quantized layer whose deployed weights cannot be read as integers.
    """
    if params.float_layers not in ("int", "float32", "float16", "skip"):
        raise ValueError(f"float_layers must be int, float32, float16 or skip, got {params.float_layers!r}")
    model = copy.deepcopy(model)
    for name, m in weight_layers(model):
        q = getattr(m, "weight_quantizer", None)
        if isinstance(q, StoredWeights):
            continue
        if q is not None:
            _deploy_quantized(name, m)
            continue
        if params.float_layers in ("float32", "skip"):
            continue
        wq = _float_quantizer(m, params)
        if not isinstance(m, (QuantConv2d, QuantLinear)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = _quant_copy(m, wq.to(m.weight.device), getattr(m, "act_quantizer", None))
            setattr(parent, child, new)
            m = new
        else:
            m.weight_quantizer = wq.to(m.weight.device)
        with torch.no_grad():
            w = m.weight.detach().float()
            if wq.kind == "float16":
                m.weight.data.copy_(w.half().float())
            else:
                s = wq.scale.to(w.device)
                m.weight.data.copy_(torch.clamp(torch.round(w / s), -(2 ** (wq.bits - 1) - 1), 2 ** (wq.bits - 1) - 1) * s)
    return model


def is_deployed(model: nn.Module) -> bool:
    """True when no conv/linear layer has a training-time weight quantizer left."""
    return all(getattr(m, "weight_quantizer", None) is None or isinstance(m.weight_quantizer, StoredWeights)
               for _, m in weight_layers(model))


class BitView:
    """The addressable bits of a deployed model (see :func:`deploy`).

    Args:
        model: a deployed model; flips change its weights in place.
        float_layers: ``skip`` leaves plain float layers out; otherwise they are float32 sites.
    """

    def __init__(self, model: nn.Module, float_layers: str = "float32") -> None:
        if not is_deployed(model):
            raise ValueError("BitView needs a deployed model: call sturdynet.faults.deploy(model, params) first")
        self.model = model
        self.sites: List[Site] = []
        offset = 0
        for name, m in weight_layers(model):
            q = getattr(m, "weight_quantizer", None)
            if q is None:
                if float_layers == "skip":
                    continue
                kind, bits = "float32", 32
                if m.weight.dtype != torch.float32:
                    raise ValueError(f"layer {name}: float weights must be float32, got {m.weight.dtype}")
            else:
                kind, bits = q.kind, q.bits
            site = Site(name, m, kind, bits, m.weight.numel(), offset)
            offset += site.nbits
            self.sites.append(site)
        if not self.sites:
            raise ValueError("the model has no conv/linear weights in this bit view")
        self.total_bits = offset

    # -- words -------------------------------------------------------------------------
    def _scale(self, site: Site) -> Tensor:
        return site.module.weight_quantizer.scale.to(site.module.weight.device)

    def words(self, i: int) -> Tensor:
        """The stored bit patterns of site ``i`` as non-negative int64 (flattened)."""
        site = self.sites[i]
        w = site.module.weight.detach()
        if site.kind == "float32":
            return w.contiguous().view(torch.int32).reshape(-1).long() & 0xFFFFFFFF
        if site.kind == "float16":
            return w.half().contiguous().view(torch.int16).reshape(-1).long() & 0xFFFF
        if site.kind == "binary":
            return (w > 0).reshape(-1).long()
        return self.integers(i) & ((1 << site.bits) - 1)

    def integers(self, i: int) -> Tensor:
        """The stored signed integers of an ``int`` or ``ternary`` site (flattened int64)."""
        site = self.sites[i]
        if site.kind not in ("int", "ternary"):
            raise ValueError(f"site {site.name} stores {site.kind}, not integers")
        w = site.module.weight.detach().float()
        if site.kind == "ternary":
            return ternary_codes(w, self._scale(site)).reshape(-1)
        return torch.round(w / self._scale(site)).reshape(-1).long()

    def decode(self, i: int, words: Tensor) -> Tensor:
        """Weight values (float32, the weight's shape) for bit patterns ``words``."""
        site = self.sites[i]
        shape = site.module.weight.shape
        words = words.reshape(shape).long()
        if site.kind == "float32":
            return torch.where(words >= 2 ** 31, words - 2 ** 32, words).int().view(torch.float32)
        if site.kind == "float16":
            return torch.where(words >= 2 ** 15, words - 2 ** 16, words).short().view(torch.float16).float()
        if site.kind == "binary":
            return (2.0 * words.float() - 1.0) * self._scale(site)
        half = 1 << (site.bits - 1)
        q = torch.where(words >= half, words - (1 << site.bits), words)
        if site.kind == "ternary":
            return ternary_values(q, self._scale(site))
        return q.float() * self._scale(site)

    def bit_steps(self, i: int, elem: Tensor) -> Tensor:
        """``(len(elem), bits)`` float64: how much weight ``elem[r]`` of an ``int``, ``binary``
        or ``ternary`` site changes when its bit ``j`` goes from 0 to 1 (the others as stored).

        ``int``: ``s * 2^j`` and ``-s * 2^(k-1)`` for the sign bit; ``binary``: ``2 s``;
        ``ternary``: see :func:`sturdynet.faults.ternary_store.ternary_bit_steps`.
        """
        site = self.sites[i]
        if site.kind == "ternary":
            return ternary_bit_steps(self.words(i)[elem], self._scale(site))
        if site.kind not in ("int", "binary"):
            raise ValueError(f"site {site.name} stores {site.kind}: no fixed-point bit steps")
        scale = self._scale(site).expand_as(site.module.weight).reshape(-1)[elem].double()
        if site.kind == "binary":
            coef = torch.full((1,), 2.0, dtype=torch.float64, device=scale.device)
        else:
            coef = 2.0 ** torch.arange(site.bits, dtype=torch.float64, device=scale.device)
            coef[-1] = -coef[-1]
        return scale[:, None] * coef[None, :]

    @torch.no_grad()
    def write(self, i: int, words: Tensor) -> None:
        """Store bit patterns ``words`` into site ``i`` (in place)."""
        self.sites[i].module.weight.data.copy_(self.decode(i, words))

    # -- flips -------------------------------------------------------------------------
    def flip(self, i: int, elem: Tensor, bit: Tensor) -> None:
        """Flip bit ``bit[j]`` of element ``elem[j]`` of site ``i`` for every j.

        A (element, bit) pair listed an even number of times is left unchanged.
        """
        site = self.sites[i]
        elem = torch.as_tensor(elem, dtype=torch.long).reshape(-1).cpu()
        bit = torch.as_tensor(bit, dtype=torch.long).reshape(-1).cpu()
        if elem.shape != bit.shape:
            raise ValueError("elem and bit must have the same number of entries")
        if elem.numel() == 0:
            return
        if int(elem.min()) < 0 or int(elem.max()) >= site.numel:
            raise ValueError(f"element index out of range for {site.name} ({site.numel} weights)")
        if int(bit.min()) < 0 or int(bit.max()) >= site.bits:
            raise ValueError(f"bit index out of range for {site.name} ({site.bits} bits per weight)")
        keys, counts = torch.unique(elem * site.bits + bit, return_counts=True)
        keys = keys[counts % 2 == 1]
        mask = torch.zeros(site.numel, dtype=torch.long)
        mask.index_add_(0, keys // site.bits, torch.ones_like(keys) << (keys % site.bits))
        words = self.words(i)
        self.write(i, words ^ mask.to(words.device))

    def locate(self, positions: Tensor) -> List[Tuple[int, Tensor, Tensor]]:
        """Split global bit positions into (site, element, bit) groups."""
        positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1).cpu()
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.total_bits):
            raise ValueError(f"bit position out of range [0, {self.total_bits})")
        starts = torch.tensor([s.offset for s in self.sites], dtype=torch.long)
        which = torch.searchsorted(starts, positions, right=True) - 1
        out = []
        for i in torch.unique(which).tolist():
            local = positions[which == i] - self.sites[i].offset
            out.append((i, local // self.sites[i].bits, local % self.sites[i].bits))
        return out

    def flip_positions(self, positions: Tensor) -> None:
        """Flip the bits at global positions (site offsets in model order)."""
        for i, elem, bit in self.locate(positions):
            self.flip(i, elem, bit)

    def describe(self) -> List[dict]:
        return [{"layer": s.name, "kind": s.kind, "bits": s.bits, "weights": s.numel} for s in self.sites]


def popcount(x: Tensor, bits: int) -> Tensor:
    """Number of set bits of each non-negative int64 in ``x`` (vectorized over bit planes)."""
    total = torch.zeros_like(x)
    for b in range(bits):
        total += (x >> b) & 1
    return total


def hamming_distance(a: nn.Module, b: nn.Module, params: ViewParams = ViewParams()) -> int:
    """Number of differing stored bits between two models of the same architecture.

    Both are deployed with ``params`` first (a no-op for already deployed models).

    Raises:
        ValueError: different architectures or formats, or different scales of an
            integer layer (then bit patterns are not comparable).
    """
    va = BitView(deploy(a, params), params.float_layers)
    vb = BitView(deploy(b, params), params.float_layers)
    if [(s.name, s.kind, s.bits, s.numel) for s in va.sites] != [(s.name, s.kind, s.bits, s.numel) for s in vb.sites]:
        raise ValueError("the two models have different layers or storage formats")
    dist = 0
    for i, (sa, sb) in enumerate(zip(va.sites, vb.sites)):
        if sa.kind in ("int", "binary", "ternary") and not torch.equal(va._scale(sa).cpu(), vb._scale(sb).cpu()):
            raise ValueError(f"layer {sa.name}: the two models use different scales; bits are not comparable")
        dist += int(popcount(va.words(i).cpu() ^ vb.words(i).cpu(), sa.bits).sum())
    return dist
