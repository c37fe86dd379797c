"""Structured pruning: remove whole conv channels / linear units; the model really shrinks.

Criteria:

* ``l1`` -- the L1 norm of each output filter, Li et al., "Pruning Filters for
  Efficient ConvNets" (arXiv 1608.08710); the same fraction is removed in every
  channel group (``scope: layer``), as in that paper.
* ``bn`` -- the absolute batch-norm scale |gamma|, Liu et al., "Network Slimming"
  (arXiv 1708.06519); with ``scope: global`` one threshold over all groups, as in that
  paper (the sparsity-inducing L1 penalty on gamma during training is not part of
  this method). Groups without a batch norm are skipped under ``bn``.

Two engines decide which channels can go together (``engine``):

* ``modules`` -- :mod:`sturdynet.prune.channel_groups` reads the module structure of
  sturdynet's own models (chains in ``nn.Sequential``, the block-internal channels of
  residual blocks) and offers the masked reference below;
* ``graph`` -- :mod:`sturdynet.prune.graph` traces any network with torch-pruning's
  dependency graph (arXiv 2301.12900), so channels coupled across residual adds,
  concatenations, depthwise convs and squeeze-excitation products go together;
* ``auto`` (default) -- ``modules`` for sturdynet's built-in models, ``graph`` for every
  other network (torchvision, timm, factories, input-normalized wrappers).

The masked reference: a pruned channel is masked in the producer's weight (and bias)
*and* in its batch norm's gamma and beta, so the channel's output is exactly zero after
the norm (masking the conv alone would leave ``beta`` flowing on). The masks are the
ordinary ``<param>_mask`` buffers, so fine-tuning keeps them. :func:`compact` then
removes every fully masked channel; the smaller model computes the same function as
the masked one (up to float rounding). ``physical: false`` returns the masked model.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Mapping, Optional, Set, Tuple

import torch
from torch import Tensor, nn

from ..core.method import CompressContext, CompressionMethod
from ..core.params import rng
from ..core.registry import METHODS
from .channel_groups import ChannelGroup, find_groups, out_channels
from .graph import graph_prune, resize_to_shapes
from .macs import count_macs
from ..core.masks import SUFFIX, attach_mask, get_masks


@dataclass(frozen=True)
class StructuredParams:
    amount: float = rng(0, 1, "[)", default=0.5)
    criterion: Literal["l1", "bn"] = "l1"
    scope: Literal["layer", "global"] = "layer"
    min_channels: int = rng(1, None, default=1)
    physical: bool = True
    engine: Literal["auto", "modules", "graph"] = "auto"

    def __post_init__(self) -> None:
        if self.engine == "graph" and not self.physical:
            raise ValueError("engine 'graph' removes channels physically; physical: false needs engine: modules")
        if self.scope == "global" and self.criterion != "bn":
            raise ValueError("scope 'global' ranks batch-norm gammas (criterion: bn); L1 filter norms of "
                             "different layers are not comparable, use scope: layer")


def _get(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def channel_scores(model: nn.Module, group: ChannelGroup, criterion: str) -> Optional[Tensor]:
    """One score per channel of ``group`` (None when ``bn`` is asked and it has no norm)."""
    prod = _get(model, group.producer)
    if criterion == "l1":
        return prod.weight.detach().abs().flatten(1).sum(1).double()
    if criterion == "bn":
        if group.norm is None:
            return None
        return _get(model, group.norm).weight.detach().abs().double()
    raise ValueError(f"criterion must be 'l1' or 'bn', got {criterion!r}")


def select_channels(model: nn.Module, groups: List[ChannelGroup], params: StructuredParams) -> Dict[str, Tensor]:
    """{producer name: boolean keep vector} for the groups that the criterion covers."""
    scored = [(g, channel_scores(model, g, params.criterion)) for g in groups]
    scored = [(g, s) for g, s in scored if s is not None]
    keep: Dict[str, Tensor] = {}
    if params.scope == "layer":
        for g, s in scored:
            c = s.numel()
            n_rm = min(int(round(params.amount * c)), max(0, c - params.min_channels))
            k = torch.ones(c, dtype=torch.bool, device=s.device)
            k[torch.sort(s, stable=True).indices[:n_rm]] = False
            keep[g.producer] = k
        return keep
    # global: one ranking over every group, each keeping at least min_channels
    total = sum(s.numel() for _, s in scored)
    n_rm = int(round(params.amount * total))
    adjusted = []
    for _, s in scored:
        a = s.clone()
        top = torch.topk(s, min(params.min_channels, s.numel())).indices
        a[top] = float("inf")
        adjusted.append(a)
    flat = torch.cat(adjusted) if adjusted else torch.empty(0, dtype=torch.float64)
    n_rm = min(n_rm, int(torch.isfinite(flat).sum()))
    kflat = torch.ones(flat.numel(), dtype=torch.bool)
    kflat[torch.sort(flat, stable=True).indices[:n_rm]] = False
    for (g, s), k in zip(scored, torch.split(kflat, [s.numel() for _, s in scored])):
        keep[g.producer] = k.to(s.device)
    return keep


def _rows(mask_shape: torch.Size, keep: Tensor) -> Tensor:
    return keep.view(-1, *([1] * (len(mask_shape) - 1))).expand(mask_shape).clone()


def mask_channels(model: nn.Module, groups: List[ChannelGroup], keep: Mapping[str, Tensor]) -> None:
    """Attach channel masks in place: producer weight rows and bias, norm gamma and beta."""
    by_name = {g.producer: g for g in groups}
    for pname, k in keep.items():
        g = by_name[pname]
        prod = _get(model, pname)
        old = prod._buffers.get("weight" + SUFFIX)
        new = _rows(prod.weight.shape, k.to(prod.weight.device))
        attach_mask(prod, "weight", new if old is None else new & old.bool())
        if prod.bias is not None:
            attach_mask(prod, "bias", k.clone())
        if g.norm is not None:
            norm = _get(model, g.norm)
            attach_mask(norm, "weight", k.clone())
            attach_mask(norm, "bias", k.clone())


def _off(m: nn.Module, pname: str, n: int) -> Tensor:
    """Per channel: True where ``m.<pname>`` is entirely masked (or ``m`` has no such tensor)."""
    p = getattr(m, pname, None)
    if p is None:
        return torch.ones(n, dtype=torch.bool)
    mk = m._buffers.get(pname + SUFFIX)
    if mk is None:
        return torch.zeros(n, dtype=torch.bool)
    return ~mk.reshape(n, -1).any(1).cpu()


def _live_channels(model: nn.Module, g: ChannelGroup) -> Tensor:
    """Channels not fully masked; a channel is dead when its filter, its bias and its
    norm's gamma and beta (those that exist) are all masked."""
    prod = _get(model, g.producer)
    n = out_channels(prod)
    dead = _off(prod, "weight", n) & _off(prod, "bias", n)
    if g.norm is not None:
        norm = _get(model, g.norm)
        dead &= _off(norm, "weight", n) & _off(norm, "bias", n)
    return ~dead


def _slice(m: nn.Module, name: str, dim: int, idx: Tensor) -> None:
    """Index ``m.<name>`` (parameter or buffer) and its mask along ``dim``."""
    if name in m._parameters and m._parameters[name] is not None:
        p = m._parameters[name]
        m._parameters[name] = nn.Parameter(p.detach().index_select(dim, idx).clone(), requires_grad=p.requires_grad)
    elif name in m._buffers and m._buffers[name] is not None:
        m._buffers[name] = m._buffers[name].index_select(dim, idx).clone()
    mask = m._buffers.get(name + SUFFIX)
    if mask is not None:
        m._buffers[name + SUFFIX] = mask.index_select(dim, idx).clone()


def shrink_group(model: nn.Module, g: ChannelGroup, keep_idx: Tensor) -> None:
    """Physically keep only channels ``keep_idx`` of group ``g`` (in place)."""
    prod = _get(model, g.producer)
    idx = keep_idx.to(prod.weight.device)
    _slice(prod, "weight", 0, idx)
    _slice(prod, "bias", 0, idx)
    if isinstance(prod, nn.Conv2d):
        prod.out_channels = int(idx.numel())
    else:
        prod.out_features = int(idx.numel())
    if g.norm is not None:
        norm = _get(model, g.norm)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _slice(norm, name, 0, idx)
        norm.num_features = int(idx.numel())
    for cname, per in g.consumers:
        cons = _get(model, cname)
        cidx = idx if per == 1 else (idx.view(-1, 1) * per + torch.arange(per, device=idx.device)).flatten()
        _slice(cons, "weight", 1, cidx)
        if isinstance(cons, nn.Conv2d):
            cons.in_channels = int(idx.numel())
        else:
            cons.in_features = int(cidx.numel())


def compact(model: nn.Module, keep_masks: Optional[Set[str]] = None) -> nn.Module:
    """A copy of a channel-masked model with every fully masked channel removed.

    Afterwards the all-true masks of the groups' weights, biases and norms are dropped,
    except those named in ``keep_masks`` (``"<module>.<param>"``); masks that still
    prune something (unstructured masks of surviving weights) are kept, sliced.
    """
    model = copy.deepcopy(model)
    keep_masks = keep_masks or set()
    for g in find_groups(model):
        live = _live_channels(model, g)
        if not bool(live.any()):
            live[0] = True  # keep one channel so the layer stays well-formed (its output is zero)
        if not bool(live.all()):
            shrink_group(model, g, torch.nonzero(live).flatten())
        for mname in [g.producer] + ([g.norm] if g.norm else []):
            m = _get(model, mname)
            for pname in ("weight", "bias"):
                mk = m._buffers.get(pname + SUFFIX)
                if mk is not None and bool(mk.all()) and f"{mname}.{pname}" not in keep_masks:
                    del m._buffers[pname + SUFFIX]
    return model


def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` whose channel groups have the sizes found in ``state_dict``
    (the first channels are kept), so that a physically pruned checkpoint loads into it."""
    model = copy.deepcopy(model)
    for g in find_groups(model):
        key = f"{g.producer}.weight"
        if key not in state_dict:
            raise ValueError(f"state_dict has no {key}")
        n = int(state_dict[key].shape[0])
        if n != out_channels(_get(model, g.producer)):
            shrink_group(model, g, torch.arange(n))
    return model


def prunable_groups(model: nn.Module) -> List[ChannelGroup]:
    """The model's channel groups, refusing models without any or with quantized layers in them."""
    groups = find_groups(model)
    if not groups:
        raise ValueError("no prunable channel group found (see sturdynet.prune.channel_groups)")
    for g in groups:
        for name in [g.producer] + [c for c, _ in g.consumers]:
            if getattr(_get(model, name), "weight_quantizer", None) is not None:
                raise ValueError(f"layer {name} is quantized; apply prune.structured before quantization")
    return groups


def structured_prune(model: nn.Module, params: StructuredParams,
                     example: Optional[Any] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Prune channels; returns (new model, report).

    The report gives the channels per group before / after and, when ``example`` (an
    input tensor or shape without batch) is given, params and MACs before / after.
    """
    groups = prunable_groups(model)
    masked = copy.deepcopy(model)
    keep = select_channels(masked, groups, params)
    with torch.no_grad():
        mask_channels(masked, groups, keep)
    out = compact(masked, set(get_masks(model))) if params.physical else masked
    report: Dict[str, Any] = {
        "groups": {p: {"before": int(k.numel()), "after": int(k.sum())} for p, k in keep.items()},
        "params_before": sum(p.numel() for p in model.parameters()),
        "params_after": sum(p.numel() for p in out.parameters()),
    }
    if example is not None:
        before, after = count_macs(model, example), count_macs(out, example)
        report.update(macs_before=before["macs"], macs_after=after["macs"],
                      nonzero_macs_after=after["nonzero_macs"])
    report["params_removed"] = report["params_before"] - report["params_after"]
    return out, report


def engine_for(model: nn.Module, params: StructuredParams) -> str:
    """``modules`` or ``graph``: ``auto`` picks ``modules`` for sturdynet's built-in models only."""
    if params.engine != "auto":
        return params.engine
    if not params.physical:
        return "modules"
    return "modules" if getattr(model, "sturdynet_model", None) else "graph"


@METHODS.register("prune.structured", params=StructuredParams)
class StructuredPruning(CompressionMethod):
    """Channel pruning by L1 filter norm or batch-norm gamma (see the module docstring)."""

    def apply(self, model: nn.Module, params: StructuredParams, ctx: Optional[CompressContext] = None) -> nn.Module:
        example = None
        data = getattr(ctx, "data", None) if ctx is not None else None
        if data is not None and hasattr(data, "input_size"):
            example = (data.in_channels, *data.input_size)
        if engine_for(model, params) == "graph":
            if example is None:
                raise ValueError("prune.structured (engine graph) needs the data's input shape to trace the model")
            out, report = graph_prune(model, example, params.amount, params.criterion, params.scope)
        else:
            out, report = structured_prune(model, params, example)
        if ctx is not None:
            ctx.log["prune.structured"] = report
        return out

    def prepare_for_state(self, model: nn.Module, params: StructuredParams, state_dict) -> nn.Module:
        """The structure of a checkpoint: for ``scope: global`` the channel counts are
        read from ``state_dict`` (masked models keep every channel, with masks); the graph
        engine's shapes are always read from it."""
        if engine_for(model, params) == "graph":
            return resize_to_shapes(model, state_dict)
        if params.scope == "layer":
            return self.prepare(model, params)
        if params.physical:
            return resize_to_state_dict(model, state_dict)
        return self.prepare(model, dataclasses.replace(params, scope="layer"))

    def prepare(self, model: nn.Module, params: StructuredParams) -> nn.Module:
        """The pruned structure with placeholder weights (for loading a checkpoint).

        Only ``scope: layer`` fixes the channel counts from the parameters alone; for
        ``scope: global`` use :func:`resize_to_state_dict` with the checkpoint.
        """
        if engine_for(model, params) == "graph":
            raise ValueError("the graph engine's channel counts come from the checkpoint; "
                             "use sturdynet.prune.graph.resize_to_shapes(model, state_dict)")
        if params.scope != "layer":
            raise ValueError("prepare cannot know the channel counts of scope 'global'; "
                             "use sturdynet.prune.structured.resize_to_state_dict(model, state_dict)")
        model = copy.deepcopy(model)
        groups = prunable_groups(model)
        keep = {}
        for g in groups:
            if params.criterion == "bn" and g.norm is None:
                continue
            c = out_channels(_get(model, g.producer))
            n_rm = min(int(round(params.amount * c)), max(0, c - params.min_channels))
            k = torch.zeros(c, dtype=torch.bool)
            k[: c - n_rm] = True
            keep[g.producer] = k
        if params.physical:
            for g in groups:
                if g.producer in keep:
                    shrink_group(model, g, torch.nonzero(keep[g.producer]).flatten())
            return model
        with torch.no_grad():
            mask_channels(model, groups, {p: torch.ones_like(k) for p, k in keep.items()})
        return model
