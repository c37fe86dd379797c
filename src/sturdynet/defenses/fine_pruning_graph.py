"""Fine-Pruning's pruning step on any network (Liu et al., arXiv 1805.12185), through the
dependency graph of :mod:`sturdynet.prune.coupled` (DepGraph, arXiv 2301.12900).

The last convolutional layer, precisely: trace one clean batch and list the conv / linear
layers in the order they first run; the last of them is the classifier. Going back from
the end, the first ``nn.Conv2d`` whose coupled output-channel group

* does not contain the classifier's outputs (the network's output stays whole),
* is read by some conv / linear layer,
* is not a residual stream: the graph does not couple it through an addition with the
  output of another conv / linear layer (depthwise convs do not count: they pass each
  channel through), and
* can be removed: removing one of its channels through the graph gives a model that runs
  and computes what masking that channel computes (this rejects groups tied to the
  network input and channel-mixing operations the graph does not model)

is the layer pruned. So in a residual network it is the last block's last inner conv (the
``modules`` engine's choice for sturdynet's own ResNets), not the very last conv, which
adds into the residual stream. Residual streams are passed over by default because every
block of the stage reads and writes each stream channel, so the accuracy limit stops the
search after very few channels (measured on a BadNets-poisoned digits ResNet, 3 seeds:
0-2 of 16 stream channels within a 4-point limit, attack success 93%, against 5-6 of 16
inner channels, 51%). A stream can still be pruned by naming one of its convs in
``layer``: the graph then removes each chosen channel from the whole coupled group (every
conv and batch norm adding into the stream, the shortcut's included, and every layer that
reads it) or from none. A network whose every prunable group is a residual stream gets
its last removable stream.

The paper's rule is kept: channels are ranked by increasing mean activation on clean data,
measured where they are read (the input of the first reader that runs after the layer:
after the residual add, nonlinearity and pooling), and removed in that order while clean
validation accuracy stays within ``max_accuracy_drop``. Each step of that search masks the
channels in every coupled layer (producer rows, batch-norm terms, reader columns) and
evaluates the masked model, which computes what the physically pruned one computes; the
chosen channels are then removed from every coupled layer.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..data.base import Split
from ..prune.coupled import (CoupledChannels, check_removable, check_unmasked, coupled_channels,
                             execution_order, mask_coupled, mean_read_activations, remove_coupled)
from ..train.loop import evaluate_accuracy

NAME = "prune.fine_pruning"
_CHECK = 16  # clean images on which a candidate's removal is verified


def _candidate(model: nn.Module, cc: CoupledChannels, head: str, x: Tensor) -> str:
    """Why the group ``cc`` cannot be fine-pruned ("" when it can)."""
    if head in cc.member_names:
        return "its channels are the network's output"
    if not cc.readers:
        return "no conv or linear layer reads its channels"
    return check_removable(model, cc, x[:_CHECK]) or ""


def _stream_reason(model: nn.Module, cc: CoupledChannels) -> str:
    return (f"its channels are a residual stream ({len(cc.producers(model))} layers add into them); "
            "name it in layer to prune the whole stream")


def pick_coupled(model: nn.Module, layer: Optional[str], x: Tensor) -> Tuple[CoupledChannels, List[str], List[Dict]]:
    """(group, execution order, later convs passed over with the reason) of ``layer`` or
    of the last prunable conv (see the module docstring)."""
    order = execution_order(model, x[:1])
    if not order:
        raise ValueError("fine-pruning needs a convolution layer; the model has none")
    head = order[-1]
    if layer is not None:
        if layer not in order or layer == head:
            choices = [n for n in order if n != head and isinstance(model.get_submodule(n), nn.Conv2d)]
            raise ValueError(f"layer: {layer!r} is not a conv / linear layer before the classifier; "
                             f"choose one of {', '.join(choices)}")
        cc = coupled_channels(model, layer, x[:1])
        reason = _candidate(model, cc, head, x)
        if reason:
            raise ValueError(f"layer: {layer!r} cannot be fine-pruned: {reason}")
        return cc, order, []
    skipped: List[Dict] = []
    seen: Dict[str, str] = {}  # layer -> reason, for every layer of a group already passed over
    streams: List[CoupledChannels] = []
    for name in reversed(order):
        if name == head or not isinstance(model.get_submodule(name), nn.Conv2d):
            continue
        if name in seen:
            skipped.append({"layer": name, "reason": seen[name]})
            continue
        cc = coupled_channels(model, name, x[:1])
        stream = cc.residual_stream(model)
        reason = _stream_reason(model, cc) if stream else _candidate(model, cc, head, x)
        if not reason:
            return cc, order, skipped
        if stream:
            streams.append(cc)
        seen.update({m: reason for m in cc.member_names})
        skipped.append({"layer": name, "reason": reason})
    for cc in streams:  # a network made of residual streams only: the last removable stream
        if not _candidate(model, cc, head, x):
            return cc, order, [s for s in skipped if s["layer"] not in cc.member_names]
    why = "; ".join(f"{s['layer']}: {s['reason']}" for s in skipped[:3])
    raise ValueError(f"fine-pruning needs a prunable convolution layer; the traced graph has none ({why or 'no conv'})")


def search_pruned(act: Tensor, amount: float, max_accuracy_drop: Optional[float], min_channels: int, base: float,
                  accuracy_without: Callable[[Tensor], float]) -> Tuple[Tensor, Dict[str, Any]]:
    """The paper's search, shared by both engines: remove channels in increasing order of
    mean activation ``act`` while the clean accuracy (``accuracy_without(dead)``, ``dead``
    a growing boolean set) stays within ``max_accuracy_drop`` of ``base`` and at most
    ``amount`` of them (keeping ``min_channels``) are gone. Returns the keep vector and
    the report's search fields."""
    c = act.numel()
    ranked = torch.sort(act, stable=True).indices
    limit = min(int(round(amount * c)), max(0, c - min_channels))
    curve: List[Dict[str, Any]] = []
    k, acc, stopped = 0, base, "amount"
    for n in range(1, limit + 1):
        dead = torch.zeros(c, dtype=torch.bool)
        dead[ranked[:n]] = True
        a = accuracy_without(dead)
        curve.append({"channels": n, "accuracy": a})
        if max_accuracy_drop is not None and base - a > max_accuracy_drop + 1e-12:
            stopped = "accuracy_drop"
            break
        k, acc = n, a
    keep = torch.ones(c, dtype=torch.bool)
    keep[ranked[:k]] = False
    return keep, {"channels_before": c, "channels_pruned": k, "channel_sparsity": k / c,
                  "pruned_channels": ranked[:k].tolist(), "mean_activation": [round(float(v), 6) for v in act],
                  "clean_accuracy_before": base, "clean_accuracy_pruned": acc, "stopped_by": stopped, "curve": curve}


def graph_prune_order(model: nn.Module, cc: CoupledChannels, order: List[str], amount: float,
                      max_accuracy_drop: Optional[float], min_channels: int,
                      clean: Split) -> Tuple[Tensor, Dict[str, Any]]:
    """The boolean keep vector of ``cc`` and the search's report (the same fields as the
    module engine's, plus where the activations were read)."""
    act, where = mean_read_activations(model, cc, order, clean.x)
    work = copy.deepcopy(model)

    def accuracy_without(dead: Tensor) -> float:
        mask_coupled(work, cc, ~dead)  # the dead set only grows, so masking in place is exact
        return evaluate_accuracy(work, clean)["accuracy"]

    keep, found = search_pruned(act, amount, max_accuracy_drop, min_channels,
                                evaluate_accuracy(model, clean)["accuracy"], accuracy_without)
    return keep, {"layer": cc.root, **found, "engine": "graph", "activations_read_at": where}


def fine_prune_graph(model: nn.Module, params: Any, clean: Split) -> Tuple[nn.Module, Dict[str, Any]]:
    """Pick the layer, search the channels and remove (``physical``) or mask them; returns
    (new model, report). ``params``: :class:`~sturdynet.defenses.fine_pruning.FinePruningParams`."""
    check_unmasked(model, NAME)
    cc, order, skipped = pick_coupled(model, params.layer, clean.x)
    keep, report = graph_prune_order(model, cc, order, params.amount, params.max_accuracy_drop,
                                     params.min_channels, clean)
    masked = copy.deepcopy(model)
    mask_coupled(masked, cc, keep)
    out = remove_coupled(masked, cc, keep, clean.x[:1]) if params.physical else masked
    report["coupled_layers"] = cc.layers
    if skipped:
        report["skipped_layers"] = skipped
    return out, report
