"""Loss of a fixed batch after changing one layer's weights, recomputing only what follows it.

The Bit-Flip Attack's cross-layer search (arXiv 1903.12269) scores every layer's
candidate flips by the loss of the attack batch with those flips applied: the reference
runs the whole network once per layer. Nothing before the flipped layer changes, so
:class:`SuffixLoss` traces the model once (``torch.fx``), keeps, from the forward pass the
attack already makes for its gradients, the activations that cross the point where
each weight layer starts, and evaluates a candidate by running only the nodes from that
layer on. The arithmetic of every node is the same as in the full forward pass, so the
losses are bit-identical (checked once on the attack batch: the traced graph must give
the model's own logits exactly, else the full forward pass is used).

Falls back to the full forward pass (``active`` is False) when the model cannot be
traced, calls a weight layer more than once, reads a layer's weight outside its own
call, or returns something other than one logits tensor.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn


class _Tracer(fx.Tracer):
    """Weight layers, childless modules and modules with hooks are leaves; containers are traced."""

    def __init__(self, leaves: Sequence[nn.Module]) -> None:
        super().__init__()
        self._leaves = {id(m) for m in leaves}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if id(m) in self._leaves or m._forward_hooks or m._forward_pre_hooks or not any(True for _ in m.children()):
            return True
        return super().is_leaf_module(m, qualname)


class SuffixLoss:
    """Cross-entropy of ``model`` on ``(x, y)`` with activation caching per weight layer.

    Args:
        model: the (deployed, eval-mode) model; its weights are read live.
        layers: (name, module) of the weight layers whose changes are scored.
        x: the attack batch.
        trace: False: always run the full forward pass (the reference cost).
    """

    def __init__(self, model: nn.Module, layers: Sequence[Tuple[str, nn.Module]], x: Tensor,
                 trace: bool = True) -> None:
        self.model, self.x = model, x
        self.active = False
        self.cache: Dict[fx.Node, Tensor] = {}
        if not trace:
            return
        try:
            self._build(layers)
        except Exception:  # noqa: BLE001 - any tracing problem means: use the full forward pass
            self.active = False

    def _build(self, layers: Sequence[Tuple[str, nn.Module]]) -> None:
        graph = _Tracer([m for _, m in layers]).trace(self.model)
        self.gm = fx.GraphModule(self.model, graph)
        self.nodes: List[fx.Node] = list(graph.nodes)
        index = {n: j for j, n in enumerate(self.nodes)}
        names = [name for name, _ in layers]
        calls = [n for n in self.nodes if n.op == "call_module" and n.target in names]
        if len(calls) != len(set(c.target for c in calls)) or len(calls) != len(names):
            return  # a layer called twice (shared weights) or never
        if any(n.op == "get_attr" and any(str(n.target).startswith(nm + ".") for nm in names) for n in self.nodes):
            return  # a weight read outside its layer's call
        self.start = {c.target: index[c] for c in calls}
        self.last_use: Dict[fx.Node, int] = {}
        for n in self.nodes:
            for u in n.users:
                self.last_use[n] = max(self.last_use.get(n, -1), index[u])
        self.live = {nm: [n for n in self.nodes[:s] if self.last_use.get(n, -1) >= s] for nm, s in self.start.items()}
        keep = {n for lv in self.live.values() for n in lv}
        self.keep = keep
        self.mods = dict(self.gm.named_modules())
        with torch.no_grad():
            out = self._run({}, 0, cache=False)
            ref = self.model(self.x)
        self.active = isinstance(out, Tensor) and isinstance(ref, Tensor) and torch.equal(out, ref)

    def _run(self, env: Dict[fx.Node, Tensor], lo: int, cache: bool):
        for j in range(lo, len(self.nodes)):
            n = self.nodes[j]
            if n.op == "placeholder":
                env[n] = self.x
                out = self.x
            elif n.op == "output":
                return fx.node.map_arg(n.args[0], env.__getitem__)
            else:
                args = fx.node.map_arg(n.args, env.__getitem__)
                kwargs = fx.node.map_arg(n.kwargs, env.__getitem__)
                if n.op == "call_module":
                    out = self.mods[n.target](*args, **kwargs)
                elif n.op == "call_function":
                    out = n.target(*args, **kwargs)
                elif n.op == "call_method":
                    out = getattr(args[0], n.target)(*args[1:], **kwargs)
                else:  # get_attr
                    out = self.gm
                    for a in str(n.target).split("."):
                        out = getattr(out, a)
                env[n] = out
            if cache and n in self.keep:
                self.cache[n] = out.detach() if isinstance(out, Tensor) else out
            for a in n.all_input_nodes:
                if self.last_use.get(a) == j and a in env:
                    del env[a]
        raise RuntimeError("graph without output")  # pragma: no cover

    def logits(self, refresh: bool = True) -> Tensor:
        """The full forward pass (differentiable when grad is on); with ``refresh`` it also
        stores the activations every layer's suffix starts from."""
        if not self.active:
            return self.model(self.x)
        if refresh:
            self.cache = {}
        return self._run({}, 0, cache=refresh)

    @torch.no_grad()
    def loss(self, y: Tensor, layer: Optional[str] = None) -> float:
        """Cross-entropy with the weights as they are now, recomputing from ``layer`` on
        (None, or no cache: the full forward pass). Valid while every layer before
        ``layer`` is unchanged since the last :meth:`logits` with ``refresh``."""
        if not self.active or layer is None or not self.cache:
            return float(F.cross_entropy(self.model(self.x), y))
        env = {n: self.cache[n] for n in self.live[layer]}
        return float(F.cross_entropy(self._run(env, self.start[layer], cache=False), y))

    def suffix_share(self, layer: str) -> float:
        """Share of graph nodes recomputed for ``layer`` (a rough cost indicator)."""
        return 1.0 - self.start[layer] / len(self.nodes) if self.active else 1.0
