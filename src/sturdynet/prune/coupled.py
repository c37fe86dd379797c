"""The coupled channel group of one layer, on any traced network: find, mask, remove.

Fang et al., "DepGraph: Towards Any Structural Pruning" (arXiv 2301.12900), through
torch-pruning's dependency graph: the output channels of a conv layer are coupled with
every layer that must lose the same channels with it (the other producers of a residual
sum, the batch norms on the way, depthwise convs, the operand of a squeeze-excitation
product) and with the layers that read them (the next conv / linear layer, at an offset
behind a concatenation, several inputs per channel behind a flatten).

:class:`CoupledChannels` names those layers. :func:`mask_coupled` masks a channel set in
the model (``<param>_mask`` buffers, :mod:`sturdynet.core.masks`): the producer rows and
biases, the batch norms' gamma and beta, and -- what makes the masked model compute the
same function as the physically pruned one -- the readers' input columns of those
channels. :func:`remove_coupled` then removes the channels from every coupled layer
through the dependency graph. :func:`check_removable` verifies that equality on real
inputs, which also rejects groups the graph gets wrong (channels tied to the network
input, channel-mixing operations it does not model such as GroupNorm over them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core.masks import SUFFIX, attach_mask, get_masks
from ..core.tensors import eval_mode, model_device, predict

_LAYERS = (nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class CoupledChannels:
    """The channels of ``root``'s output and every layer coupled with them.

    Attributes:
        root: the conv / linear layer whose output channels are the group's channels.
        channels: how many (the root's output channels).
        members: (layer, output indices, root channel of each index) of the conv / linear /
            batch-norm layers that lose these channels at their output (the root first;
            behind a concatenation the indices are offset).
        readers: (layer, input indices, root channel of each input index) of the conv /
            linear layers that read the channels.
        layers: every named layer in the group, for the report.
        adds: the graph couples the channels through an addition of tensors (``+``, ``-``).
    """

    root: str
    channels: int
    members: List[Tuple[str, Tensor, Tensor]] = field(default_factory=list)
    readers: List[Tuple[str, Tensor, Tensor]] = field(default_factory=list)
    layers: List[str] = field(default_factory=list)
    adds: bool = False

    @property
    def member_names(self) -> List[str]:
        return [m[0] for m in self.members]

    def producers(self, model: nn.Module) -> List[str]:
        """Members that compute these channels from other channels: conv / linear layers
        except depthwise convs (which pass each channel through)."""
        return [n for n in self.member_names if isinstance(model.get_submodule(n), _LAYERS)
                and not _depthwise(model.get_submodule(n))]

    def residual_stream(self, model: nn.Module) -> bool:
        """Several producers summed into the same channels (a residual stream)."""
        return self.adds and len(self.producers(model)) > 1


def _depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def execution_order(model: nn.Module, example: Tensor) -> List[str]:
    """Names of the conv and linear layers in the order a forward pass first calls them."""
    order: List[str] = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: order.append(n) if n not in order else None)
             for n, m in model.named_modules() if isinstance(m, _LAYERS)]
    try:
        with torch.no_grad(), eval_mode(model):
            model(example.to(model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return order


def check_unmasked(model: nn.Module, method: str) -> None:
    """The graph engine slices parameters only: refuse quantized or already masked layers."""
    for name, m in model.named_modules():
        if getattr(m, "weight_quantizer", None) is not None:
            raise ValueError(f"layer {name} is quantized; apply {method} before quantization")
    if get_masks(model):
        raise ValueError(f"the model already carries pruning masks; apply {method} first (before unstructured pruning)")


def _graph(model: nn.Module, example: Tensor):
    import torch_pruning as tp

    example = example.to(model_device(model))
    with eval_mode(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def coupled_channels(model: nn.Module, root: str, example: Tensor) -> CoupledChannels:
    """The coupled group of ``root``'s output channels (traced on ``example``, one batch)."""
    dg = _graph(model, example)
    mod = model.get_submodule(root)
    pruner = dg.get_pruner_of_module(mod)
    n = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
    group = dg.get_pruning_group(mod, pruner.prune_out_channels, list(range(n)))
    names = {m: k for k, m in model.named_modules()}
    cc = CoupledChannels(root=root, channels=n)
    for item in group:
        m, fn = item.dep.target.module, item.dep.handler
        if type(m).__name__ == "_ElementWiseOp" and any(op in str(getattr(m, "_grad_fn", ""))
                                                        for op in ("AddBackward", "SubBackward")):
            cc.adds = True
        name = names.get(m) if isinstance(m, nn.Module) else None
        if name is None:
            continue
        if name not in cc.layers:
            cc.layers.append(name)
        entry = (name, torch.tensor(list(item.idxs), dtype=torch.long),
                 torch.tensor(list(item.root_idxs), dtype=torch.long))
        out_fn = dg.is_out_channel_pruning_fn(fn)
        if out_fn and isinstance(m, _LAYERS + _NORMS) and name not in cc.member_names:
            cc.members.append(entry)
        elif not out_fn and dg.is_in_channel_pruning_fn(fn) and isinstance(m, _LAYERS):
            cc.readers.append(entry)
    cc.members.sort(key=lambda e: e[0] != root)  # the root first, the rest in graph order
    return cc


def _rows(shape: torch.Size, keep: Tensor) -> Tensor:
    return keep.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()


def mask_coupled(model: nn.Module, cc: CoupledChannels, keep: Tensor) -> None:
    """Mask (in place) the channels where ``keep`` is False in every layer of ``cc``."""
    keep = keep.bool().cpu()
    with torch.no_grad():
        for name, idx, root_idx in cc.members:
            m = model.get_submodule(name)
            if getattr(m, "weight", None) is None:
                continue
            n = m.weight.shape[0]
            k = torch.ones(n, dtype=torch.bool)
            k[idx[~keep[root_idx]]] = False
            k = k.to(m.weight.device)
            if isinstance(m, _LAYERS):
                attach_mask(m, "weight", _rows(m.weight.shape, k))
                if m.bias is not None:
                    attach_mask(m, "bias", k.clone())
            elif m.affine:
                attach_mask(m, "weight", k.clone())
                attach_mask(m, "bias", k.clone())
        for name, idx, root_idx in cc.readers:
            m = model.get_submodule(name)
            w = m.weight
            cols = torch.ones(w.shape[1], dtype=torch.bool)
            cols[idx[~keep[root_idx]]] = False
            old = m._buffers.get("weight" + SUFFIX)
            new = cols.to(w.device).view(1, -1, *([1] * (w.dim() - 2))).expand(w.shape)
            attach_mask(m, "weight", new if old is None else new & old.bool())


def unmask_coupled(model: nn.Module, cc: CoupledChannels) -> None:
    """Drop the masks :func:`mask_coupled` attached (the zeros stay in the weights)."""
    for name in cc.member_names + [r[0] for r in cc.readers]:
        m = model.get_submodule(name)
        for p in ("weight", "bias"):
            m._buffers.pop(p + SUFFIX, None)


def remove_coupled(model: nn.Module, cc: CoupledChannels, keep: Tensor, example: Tensor) -> nn.Module:
    """A copy of ``model`` with the channels where ``keep`` is False removed from every
    coupled layer (the masks of ``cc``, if any, are dropped first)."""
    model = copy.deepcopy(model)
    unmask_coupled(model, cc)
    drop = torch.nonzero(~keep.bool()).flatten().tolist()
    if not drop:
        return model
    dg = _graph(model, example)
    root = model.get_submodule(cc.root)
    dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, drop).prune()
    return model


def check_removable(model: nn.Module, cc: CoupledChannels, x: Tensor) -> Optional[str]:
    """None when removing a channel of ``cc`` computes what masking it computes on ``x``
    (and the pruned model runs); otherwise the reason, in a few words."""
    if cc.channels < 2:
        return "has a single channel"
    keep = torch.ones(cc.channels, dtype=torch.bool)
    keep[0] = False
    try:
        masked = copy.deepcopy(model).eval()
        mask_coupled(masked, cc, keep)
        pruned = remove_coupled(masked, cc, keep, x[:1]).eval()
        x = x.to(model_device(model))
        with torch.no_grad():
            a, b = masked(x), pruned(x)
    except Exception as e:  # noqa: BLE001 - any failure means the graph cannot remove this group
        return f"cannot be removed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    tol = 1e-4 * max(1.0, float(a.abs().max()))
    if a.shape != b.shape or not torch.allclose(a, b, atol=tol, rtol=0):
        return "removal changes the function (a channel-mixing operation the graph does not model)"
    return None


@torch.no_grad()
def mean_read_activations(model: nn.Module, cc: CoupledChannels, order: Sequence[str], x: Tensor,
                          batch_size: int = 512) -> Tuple[Tensor, str]:
    """Mean activation of each channel of ``cc`` where it is read: at the input of the first
    reader that runs after the root (``order``: execution order), averaged over images,
    positions and, behind a flatten, the reader inputs of one channel. Returns (float64
    per channel, the reader's name). Without such a reader: at the root's output."""
    pos = {n: i for i, n in enumerate(order)}
    after = [r for r in cc.readers if pos.get(r[0], -1) > pos.get(cc.root, len(order))]
    reader = min(after, key=lambda r: pos[r[0]]) if after else None
    c = cc.channels
    total = torch.zeros(c, dtype=torch.float64)
    count = torch.zeros(c, dtype=torch.float64)
    if reader is None:
        idx, root_idx, where = torch.arange(c), torch.arange(c), cc.root
    else:
        where, idx, root_idx = reader
    count.index_add_(0, root_idx, torch.ones(len(root_idx), dtype=torch.float64))
    mod = model.get_submodule(where)
    linear = isinstance(mod, nn.Linear) and reader is not None

    def record(t: Tensor) -> None:
        t = t.detach()
        if linear:
            v = t.index_select(-1, idx.to(t.device)).reshape(t.shape[0], -1, len(idx)).double().mean(1)
        else:
            v = t.index_select(1, idx.to(t.device)).reshape(t.shape[0], len(idx), -1).double().mean(2)
        total.index_add_(0, root_idx, v.sum(0).cpu())

    if reader is None:
        hook = mod.register_forward_hook(lambda m, i, o: record(o))
    else:
        hook = mod.register_forward_pre_hook(lambda m, i: record(i[0]))
    try:
        predict(model, x, batch_size)  # the hook records; the logits are not needed
    finally:
        hook.remove()
    return total / count.clamp(min=1) / max(1, len(x)), where


def masks_from_state(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with an all-true mask wherever ``state_dict`` holds one (the
    structure of a masked checkpoint; its values are loaded afterwards)."""
    model = copy.deepcopy(model)
    mods: Dict[str, nn.Module] = dict(model.named_modules())
    for key in state_dict:
        if not key.endswith(SUFFIX):
            continue
        mname, _, pname = key[: -len(SUFFIX)].rpartition(".")
        m = mods.get(mname)
        if m is not None and getattr(m, pname, None) is not None and pname + SUFFIX not in m._buffers:
            m.register_buffer(pname + SUFFIX, torch.ones_like(getattr(m, pname), dtype=torch.bool))
    return model
