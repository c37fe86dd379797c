"""Structured channel pruning on an arbitrary graph, through torch-pruning's dependency graph.

Fang et al., "DepGraph: Towards Any Structural Pruning" (arXiv 2301.12900): one traced
forward pass builds the graph of layers whose channels are coupled (a residual add
couples every producer of the summed tensor; a concatenation splits its consumer's
input channels between the producers; a depthwise conv couples its input and output;
an element-wise product, as in squeeze-excitation, couples its operands). Each coupled
group loses the same channel indices in all its layers together, so the pruned network
stays well-formed and physically smaller.

Criteria (group importance, summed over the group's layers, as torch-pruning does):
``l1`` -- L1 norm of the channel's weights (Li et al., arXiv 1608.08710, extended to
groups); ``bn`` -- |gamma| of the group's batch norms (Liu et al., arXiv 1708.06519).
``scope: layer`` removes ``amount`` of every group; ``scope: global`` one ranking
over all groups. The classifier (the last conv/linear layer executed) keeps its
outputs; the input channels are never pruned.

Rebuilding the structure of a checkpoint needs no trace: :func:`resize_to_shapes`
gives every conv, linear and norm layer the shapes found in the state_dict.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core.tensors import model_device
from .coupled import check_unmasked

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def last_layer(model: nn.Module, example: Tensor) -> nn.Module:
    """The conv/linear layer that runs last in a forward pass (the classifier)."""
    order: List[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError("the model has no conv or linear layer to prune")
    return order[-1]


def graph_prune(model: nn.Module, example_shape: Sequence[int], amount: float, criterion: str = "l1",
                scope: str = "layer") -> Tuple[nn.Module, Dict[str, Any]]:
    """Remove ``amount`` of the channels of every coupled group; returns (new model, report).

    Args:
        model: any module whose forward takes one image batch.
        example_shape: one input's shape, e.g. ``(3, 32, 32)``.
        amount: fraction of each group's channels to remove (``scope: layer``) or of all
            channels (``scope: global``).
    Raises:
        ValueError: quantized or masked layers, or no prunable group.
    """
    import torch_pruning as tp

    from .macs import count_macs

    check_unmasked(model, "prune.structured")
    model = copy.deepcopy(model)
    was = model.training
    model.eval()
    example = torch.rand(1, *example_shape, device=model_device(model))
    before = count_macs(model, example)
    head = last_layer(model, example)
    imp = tp.importance.MagnitudeImportance(p=1) if criterion == "l1" else tp.importance.BNScaleImportance()
    pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=float(amount),
                                  global_pruning=scope == "global", ignored_layers=[head])
    groups: Dict[str, Dict[str, int]] = {}
    names = {m: n for n, m in model.named_modules()}
    sizes = {n: _out(m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    n_groups = 0
    for group in pruner.step(interactive=True):
        n_groups += 1
        group.prune()
    if n_groups == 0 and amount > 0:
        raise ValueError("no prunable channel group found in the traced graph")
    for m, n in names.items():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and _out(m) != sizes[n]:
            groups[n] = {"before": sizes[n], "after": _out(m)}
    after = count_macs(model, example)
    model.train(was)
    report = {"engine": "graph", "groups": groups, "coupled_groups": n_groups,
              "params_before": before["params"], "params_after": after["params"],
              "params_removed": before["params"] - after["params"],
              "macs_before": before["macs"], "macs_after": after["macs"]}
    return model, report


def _out(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _set(m: nn.Module, name: str, shape: Tuple[int, ...]) -> None:
    t = getattr(m, name, None)
    if t is None or tuple(t.shape) == shape:
        return
    new = torch.empty(shape, dtype=t.dtype, device=t.device)
    if name in m._parameters:
        m._parameters[name] = nn.Parameter(new, requires_grad=t.requires_grad)
    else:
        m._buffers[name] = new


def resize_to_shapes(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` whose conv, linear and norm layers have the shapes of
    ``state_dict`` (placeholder values: the state_dict is loaded afterwards). A depthwise
    conv (groups == in_channels) stays depthwise."""
    model = copy.deepcopy(model)
    for name, m in model.named_modules():
        pre = f"{name}." if name else ""
        w = state_dict.get(pre + "weight")
        if isinstance(m, nn.Conv2d) and w is not None:
            depthwise = m.groups > 1 and m.groups == m.in_channels
            out_c, in_per_group = int(w.shape[0]), int(w.shape[1])
            if depthwise:
                m.groups = out_c
            m.out_channels, m.in_channels = out_c, in_per_group * m.groups
            _set(m, "weight", tuple(w.shape))
            if m.bias is not None:
                _set(m, "bias", (out_c,))
        elif isinstance(m, nn.Linear) and w is not None:
            m.out_features, m.in_features = int(w.shape[0]), int(w.shape[1])
            _set(m, "weight", tuple(w.shape))
            if m.bias is not None:
                _set(m, "bias", (m.out_features,))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            ref = state_dict.get(pre + "running_mean", w)
            if ref is None:
                continue
            n = int(ref.shape[0])
            m.num_features = n
            for p in ("weight", "bias", "running_mean", "running_var"):
                _set(m, p, (n,))
        elif isinstance(m, nn.GroupNorm) and w is not None:
            m.num_channels = int(w.shape[0])
            for p in ("weight", "bias"):
                _set(m, p, (m.num_channels,))
    return model
