"""Bit-level view of a model's stored weights: deploy, read, flip, compare.

A *deployed* model stores every conv/linear weight in one of the formats of
:mod:`sturdynet.quant.stored` (``int``: k-bit two's-complement integers times a step;
``binary``; ``ternary``: TTQ's 2-bit codes; ``float32``; ``float16``). Each quantized
layer names its storage itself (``Quantizer.stored``: uniform and LSQ keep their
integers and steps, fixed point its power-of-two step, TTQ its codes and two scales,
binary its signs and magnitudes; any other quantizer of ``bits`` bits is read as
integers with step max|W_c| / (2^(k-1) - 1), or as binary when ``bits == 1``). Float
layers are stored per layer (or per output channel) as k-bit integers with
``s = max|W| / (2^(k-1) - 1)``, the rounding-to-nearest quantizer of the Bit-Flip Attack
paper (arXiv 1903.12269), when ``float_layers="int"``, or as float16 / float32.

:func:`deploy` returns a deep copy in which every weight tensor *holds* its decoded
stored value and each quantized layer's quantizer is replaced by its
:class:`~sturdynet.quant.stored.StoredCodes` (identity forward), so a flipped integer
such as ``-2^(k-1)`` is used exactly as stored instead of being re-clamped by a
training-time quantizer. :class:`BitView` addresses the bits of a deployed model through
those codecs only: words, flips (by element and bit, or by global bit position; a flip
touches only the words it changes), exact in-place fault trials
(:meth:`BitView.flipped`), and :func:`hamming_distance`.

Only conv and linear weights are addressed (the attack surface of the BFA paper);
biases, batch-norm parameters and pruning masks are not. Storage is taken as dense: a
flip may hit a pruned (zero) weight.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Dict, Iterator, List, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core.params import rng
from ..quant.layers import QuantConv2d, QuantLinear, _quant_copy
from ..quant.stored import Float16Codes, Float32Codes, IntCodes, StoredCodes

KINDS = StoredCodes._KINDS
FloatLayers = Literal["int", "float32", "float16", "skip"]
StoredWeights = StoredCodes  # the quantizer of a deployed layer (historical name)


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


@dataclass
class Site:
    """One addressable weight tensor and its codec."""

    name: str
    module: nn.Module
    codes: StoredCodes
    numel: int
    offset: int = 0  # first global bit position

    @property
    def kind(self) -> str:
        return self.codes.kind

    @property
    def bits(self) -> int:
        return self.codes.bits

    @property
    def nbits(self) -> int:
        return self.numel * self.bits


def weight_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every Conv2d / Linear in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _deploy_quantized(name: str, m: nn.Module) -> None:
    q = m.weight_quantizer
    with torch.no_grad():
        was = q.training
        q.eval()
        wd = m.qweight().detach().float()
        q.train(was)
        codes = q.stored(m.weight.detach(), wd, name)
        m.weight.data.copy_(codes.store(wd, name))
    m.weight_quantizer = codes.to(m.weight.device)


def deploy(model: nn.Module, params: ViewParams = ViewParams()) -> nn.Module:
    """A deep copy whose conv/linear weights hold their stored (deployed) values.

    Already deployed layers are kept as they are, so deploying twice changes nothing.

    Raises:
        ValueError: a quantized layer whose deployed weights its storage cannot hold.
    """
    if params.float_layers not in ("int", "float32", "float16", "skip"):
        raise ValueError(f"float_layers must be int, float32, float16 or skip, got {params.float_layers!r}")
    model = copy.deepcopy(model)
    for name, m in weight_layers(model):
        q = getattr(m, "weight_quantizer", None)
        if isinstance(q, StoredCodes):
            continue
        if q is not None:
            _deploy_quantized(name, m)
            continue
        if params.float_layers in ("float32", "skip"):
            continue
        w = m.weight.detach().float()
        codes = (Float16Codes(w.shape) if params.float_layers == "float16"
                 else IntCodes.fit(w, params.bits, params.per_channel)).to(m.weight.device)
        if not isinstance(m, (QuantConv2d, QuantLinear)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = _quant_copy(m, codes, getattr(m, "act_quantizer", None))
            setattr(parent, child, new)
            m = new
        else:
            m.weight_quantizer = codes
        with torch.no_grad():
            m.weight.data.copy_(codes.round_float(w))
    return model


def is_deployed(model: nn.Module) -> bool:
    """True when no conv/linear layer has a training-time weight quantizer left."""
    return all(getattr(m, "weight_quantizer", None) is None or isinstance(m.weight_quantizer, StoredCodes)
               for _, m in weight_layers(model))


def _flat(site: Site) -> Tensor:
    w = site.module.weight.data
    if not w.is_contiguous():
        raise ValueError(f"layer {site.name}: the weight is not contiguous; cannot address its words")
    return w.view(-1)


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
            codes = getattr(m, "weight_quantizer", None)
            if codes is None:
                if float_layers == "skip":
                    continue
                if m.weight.dtype != torch.float32:
                    raise ValueError(f"layer {name}: float weights must be float32, got {m.weight.dtype}")
                codes = Float32Codes(m.weight.shape)
            site = Site(name, m, codes, m.weight.numel(), offset)
            offset += site.nbits
            self.sites.append(site)
        if not self.sites:
            raise ValueError("the model has no conv/linear weights in this bit view")
        self.total_bits = offset
        self._starts = torch.tensor([s.offset for s in self.sites], dtype=torch.long)
        self._bits = torch.tensor([s.bits for s in self.sites], dtype=torch.long)
        self._elem_starts = torch.tensor([0] + [s.numel for s in self.sites], dtype=torch.long).cumsum(0)[:-1]

    # -- words -------------------------------------------------------------------------
    def words(self, i: int) -> Tensor:
        """The stored bit patterns of site ``i`` as non-negative int64 (flattened)."""
        site = self.sites[i]
        return site.codes.encode(site.module.weight.detach()).reshape(-1)

    def words_at(self, i: int, elem: Tensor) -> Tensor:
        """The stored bit patterns of the flat elements ``elem`` of site ``i`` (``words(i)[elem]``)."""
        flat = _flat(self.sites[i])
        elem = elem.to(flat.device)
        return self.sites[i].codes.encode(flat[elem], elem)

    def integers(self, i: int) -> Tensor:
        """The stored signed integers of an ``int`` or ``ternary`` site (flattened int64)."""
        site = self.sites[i]
        if site.kind not in ("int", "ternary"):
            raise ValueError(f"site {site.name} stores {site.kind}, not integers")
        return site.codes.integers(site.module.weight.detach()).reshape(-1)

    def decode(self, i: int, words: Tensor) -> Tensor:
        """Weight values (float32, the weight's shape) for bit patterns ``words``."""
        site = self.sites[i]
        return site.codes.decode(words.reshape(site.module.weight.shape).long())

    def bit_steps(self, i: int, elem: Tensor) -> Tensor:
        """``(len(elem), bits)`` float64: how much weight ``elem[r]`` of an ``int``, ``binary``
        or ``ternary`` site changes when its bit ``j`` goes from 0 to 1 (the others as stored)."""
        site = self.sites[i]
        return site.codes.bit_steps(site.module.weight.detach(), elem)

    @torch.no_grad()
    def write(self, i: int, words: Tensor) -> None:
        """Store bit patterns ``words`` into site ``i`` (in place)."""
        self.sites[i].module.weight.data.copy_(self.decode(i, words))

    # -- flips -------------------------------------------------------------------------
    def _masks(self, i: int, elem: Tensor, bit: Tensor) -> Tuple[Tensor, Tensor]:
        """The distinct elements touched and their XOR masks (pairs listed an even number of
        times cancel; elements left with an empty mask are dropped)."""
        site = self.sites[i]
        elem = torch.as_tensor(elem, dtype=torch.long).reshape(-1).cpu()
        bit = torch.as_tensor(bit, dtype=torch.long).reshape(-1).cpu()
        if elem.shape != bit.shape:
            raise ValueError("elem and bit must have the same number of entries")
        if elem.numel() == 0:
            return elem, elem
        if int(elem.min()) < 0 or int(elem.max()) >= site.numel:
            raise ValueError(f"element index out of range for {site.name} ({site.numel} weights)")
        if int(bit.min()) < 0 or int(bit.max()) >= site.bits:
            raise ValueError(f"bit index out of range for {site.name} ({site.bits} bits per weight)")
        keys, counts = torch.unique(elem * site.bits + bit, return_counts=True)
        keys = keys[counts % 2 == 1]
        elems, inverse = torch.unique(keys // site.bits, return_inverse=True)
        mask = torch.zeros(elems.numel(), dtype=torch.long)
        mask.index_add_(0, inverse, torch.ones_like(keys) << (keys % site.bits))
        return elems, mask

    @torch.no_grad()
    def flip(self, i: int, elem: Tensor, bit: Tensor) -> None:
        """Flip bit ``bit[j]`` of element ``elem[j]`` of site ``i`` for every j (in place,
        touching only those words). A pair listed an even number of times is left unchanged."""
        elems, mask = self._masks(i, elem, bit)
        if elems.numel():
            self._xor(i, elems, mask)

    def _xor(self, i: int, e: Tensor, mask: Tensor, flat: Optional[Tensor] = None,
             values: Optional[Tensor] = None) -> None:
        """XOR ``mask`` into the words of the distinct flat elements ``e`` of site ``i``
        (``values``: ``flat[e]`` when the caller already has it)."""
        codes = self.sites[i].codes
        flat = _flat(self.sites[i]) if flat is None else flat
        if e.device != flat.device:
            e, mask = e.to(flat.device), mask.to(flat.device)
        words = codes.encode(flat[e] if values is None else values, e)
        new = codes.decode(words ^ mask, e)
        flat[e] = new if new.dtype == flat.dtype else new.to(flat.dtype)

    def locate(self, positions: Tensor) -> List[Tuple[int, Tensor, Tensor]]:
        """Split global bit positions into (site, element, bit) groups."""
        positions = self._positions(positions)
        which = torch.searchsorted(self._starts, positions, right=True) - 1
        out = []
        for i in torch.unique(which).tolist():
            local = positions[which == i] - self.sites[i].offset
            out.append((i, local // self.sites[i].bits, local % self.sites[i].bits))
        return out

    def _positions(self, positions: Tensor) -> Tensor:
        positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1).cpu()
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.total_bits):
            raise ValueError(f"bit position out of range [0, {self.total_bits})")
        return positions

    def _plan(self, positions: Tensor) -> List[Tuple[int, Tensor, Tensor]]:
        """(site, distinct elements, XOR masks) for global positions, vectorized over sites
        (positions listed an even number of times cancel)."""
        keys, counts = torch.unique(self._positions(positions), return_counts=True)
        pos = keys[counts % 2 == 1]
        if pos.numel() == 0:
            return []
        which = torch.searchsorted(self._starts, pos, right=True) - 1
        bits = self._bits[which]
        local = pos - self._starts[which]
        gelem = self._elem_starts[which] + local // bits  # sorted, as pos is
        elems, inverse = torch.unique_consecutive(gelem, return_inverse=True)
        masks = torch.zeros(elems.numel(), dtype=torch.long).index_add_(0, inverse, 1 << (local % bits))
        site = torch.searchsorted(self._elem_starts, elems, right=True) - 1
        bounds = torch.searchsorted(site, torch.arange(len(self.sites) + 1)).tolist()
        elems = elems - self._elem_starts[site]
        return [(i, elems[a:b], masks[a:b]) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]

    def flip_positions(self, positions: Tensor) -> None:
        """Flip the bits at global positions (site offsets in model order)."""
        with torch.no_grad():
            for i, e, mask in self._plan(positions):
                self._xor(i, e, mask)

    @contextlib.contextmanager
    def flipped(self, positions: Tensor) -> Iterator[Dict[str, int]]:
        """Flip the bits at global positions in the live model for the ``with`` block, then
        restore every touched word exactly (also when the block raises).

        Yields:
            ``{layer name: flipped weights}`` of the sites hit.
        """
        saved: List[Tuple[Tensor, Tensor, Tensor]] = []
        per_layer: Dict[str, int] = {}
        try:
            with torch.no_grad():
                for i, e, mask in self._plan(positions):
                    flat = _flat(self.sites[i])
                    if e.device != flat.device:
                        e, mask = e.to(flat.device), mask.to(flat.device)
                    old = flat[e]  # a copy (advanced indexing)
                    saved.append((flat, e, old))
                    self._xor(i, e, mask, flat, old)
                    per_layer[self.sites[i].name] = int(e.numel())
            yield per_layer
        finally:
            with torch.no_grad():
                for flat, e, old in reversed(saved):
                    flat[e] = old

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
        if not torch.equal(sa.codes.scale.cpu(), sb.codes.scale.cpu()):
            raise ValueError(f"layer {sa.name}: the two models use different scales; bits are not comparable")
        dist += int(popcount(va.words(i).cpu() ^ vb.words(i).cpu(), sa.bits).sum())
    return dist
