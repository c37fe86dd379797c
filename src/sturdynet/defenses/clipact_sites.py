"""Activation call sites for FT-ClipAct (Hoang, Hanif and Shafique, arXiv 1912.00941).

The paper clips every activation *layer* with its own threshold. In a user's network a
layer is a call site, not a module: torchvision's BasicBlock calls one ``nn.ReLU`` twice,
and many nets call ``F.relu`` / ``torch.relu`` / ``x.relu()`` directly. :func:`clip_sites`
traces the model with ``torch.fx`` (weight layers and activation modules are leaves;
containers and user blocks are traced through), gives every activation call its own
clipped module and returns a :class:`ClipActGraph`: a ``GraphModule`` that keeps the
original module tree (every original submodule, with its class and its state_dict keys)
and adds the site modules beside it. Site names (state_dict ``<site>.threshold``):

- an ``nn.ReLU`` module called once keeps its name (the module becomes the
  :class:`ClippedReLU`; checkpoints written before per-site clipping still load);
  its further calls are ``<module>@1``, ``<module>@2``, ...;
- any other activation module ``m`` keeps its module; its clips are ``<m>@0``, ``<m>@1``;
- a functional call inside the forward of module ``owner`` is ``<owner>.<kind>_fn@<k>``
  (``relu_fn@0`` at the top level).

Why a GraphModule that keeps the tree (and not a call counter): the site of a call is
fixed by the code, so no per-forward state can drift (a submodule called on its own, an
exception in the middle of a forward); every original key and module class survives, so
bit views, BFA, quantizers and exports see the same layers; deepcopy keeps the tree
(:meth:`ClipActGraph.__deepcopy__`); a checkpoint stores only tensors and rebuilds the
structure by running this same deterministic transform on the untrained model.

A module whose forward cannot be traced (data-dependent control flow) becomes an opaque
leaf; inside it, ``nn.ReLU`` modules are replaced in place (one threshold however often
they are called) and functional calls stay unclipped: the report lists such modules and
the method counts the unseparated calls on data and warns.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

#: activation kinds FT-ClipAct clips: ReLU (the paper) and, as a stated extension, ReLU6
#: and the activations unbounded above (a pre-activation above T is taken as a fault)
CLIP_MODULES: Tuple[Tuple[type, str], ...] = (
    (nn.ReLU, "relu"), (nn.ReLU6, "relu6"), (nn.LeakyReLU, "leaky_relu"), (nn.PReLU, "prelu"),
    (nn.RReLU, "rrelu"), (nn.ELU, "elu"), (nn.CELU, "celu"), (nn.SELU, "selu"), (nn.GELU, "gelu"),
    (nn.SiLU, "silu"), (nn.Mish, "mish"), (nn.Hardswish, "hardswish"), (nn.Softplus, "softplus"))
#: bounded activations: left alone (a fault cannot make them large), reported
BOUNDED_MODULES: Tuple[Tuple[type, str], ...] = (
    (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"), (nn.Hardsigmoid, "hardsigmoid"), (nn.Hardtanh, "hardtanh"),
    (nn.Softsign, "softsign"))
_INPLACE_TWIN: Dict[Callable, Callable] = {torch.relu_: torch.relu, F.leaky_relu_: F.leaky_relu, F.elu_: F.elu,
                                           torch.selu_: torch.selu, torch.celu_: torch.celu}
CLIP_FUNCS: Dict[Callable, str] = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6", F.leaky_relu: "leaky_relu",
    F.leaky_relu_: "leaky_relu", F.prelu: "prelu", torch.prelu: "prelu", F.rrelu: "rrelu", F.elu: "elu",
    F.elu_: "elu", F.celu: "celu", torch.celu: "celu", torch.celu_: "celu", F.selu: "selu", torch.selu: "selu",
    torch.selu_: "selu", F.gelu: "gelu", F.silu: "silu", F.mish: "mish", F.hardswish: "hardswish",
    F.softplus: "softplus"}
BOUNDED_FUNCS: Dict[Callable, str] = {
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
    F.hardsigmoid: "hardsigmoid", F.hardtanh: "hardtanh", F.hardtanh_: "hardtanh", F.softsign: "softsign"}
CLIP_METHODS = {"relu": "relu", "relu_": "relu"}
BOUNDED_METHODS = {"sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh", "tanh_": "tanh"}
#: names of the torch functions / Tensor methods of every clipped kind (run-time counting)
CLIP_FUNC_NAMES = {getattr(f, "__name__", "") for f in CLIP_FUNCS} | set(CLIP_METHODS)


class ClippedReLU(nn.Module):
    """``x`` for ``0 <= x <= threshold``, else 0 (FT-ClipAct's clipped activation); a NaN
    produced by an inf weight also maps to 0."""

    def __init__(self, threshold: float = float("inf")) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(x)
        return torch.where(y <= self.threshold, y, torch.zeros_like(y))  # NaN is out of range too

    def extra_repr(self) -> str:
        return f"threshold={float(self.threshold):.4g}"


class ActivationClip(nn.Module):
    """FT-ClipAct's rule after any other activation: ``y`` where the pre-activation
    ``x <= threshold``, else 0 (NaN ``x`` too); ``forward(x, y)`` with ``y = act(x)``.

    Deviation (the paper clips ReLU only): for ReLU6 a large fault would saturate at 6 and
    still propagate; for activations unbounded above (LeakyReLU, ELU, GELU, SiLU,
    Hardswish, ...) it propagates as for ReLU. The negative side is the activation's own
    (bounded for ELU/GELU/SiLU/Hardswish; LeakyReLU/PReLU pass a scaled negative fault).
    """

    def __init__(self, kind: str = "", threshold: float = float("inf")) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.where(x <= self.threshold, y, torch.zeros_like(y))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, threshold={float(self.threshold):.4g}"


CLIP_TYPES = (ClippedReLU, ActivationClip)


def module_kind(m: nn.Module) -> Tuple[Optional[str], bool]:
    """(kind, clipped?) of an activation module; (None, False) for anything else."""
    if isinstance(m, CLIP_TYPES):
        return "clipped", True
    for table, clip in ((CLIP_MODULES, True), (BOUNDED_MODULES, False)):
        for cls, kind in table:
            if isinstance(m, cls):
                return kind, clip
    return None, False


_CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _SiteTracer(fx.Tracer):
    """Leaves: torch.nn layers and their subclasses (sturdynet's quantized layers), activation
    and clip modules, and the opaque (untraceable) modules; everything else is traced."""

    def __init__(self, opaque: Set[int]) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if id(m) in self.opaque or module_kind(m)[0] is not None or super().is_leaf_module(m, qualname):
            return True
        return any(c.__module__.startswith("torch.nn") and c not in _CONTAINERS for c in type(m).__mro__[1:])


class ClipActGraph(fx.GraphModule):
    """A traced model with one clip module per activation site that keeps the original
    module tree (children, root parameters/buffers, public attributes) through deepcopy."""

    def __deepcopy__(self, memo: Dict[int, Any]) -> "ClipActGraph":
        res = super().__deepcopy__(memo)
        _adopt(res, copy.deepcopy(self._modules, memo), copy.deepcopy(self._parameters, memo),
               copy.deepcopy(self._buffers, memo), set(self._non_persistent_buffers_set),
               copy.deepcopy({k: v for k, v in vars(self).items() if _public_attr(k, v)}, memo))
        _copy_hooks(res, self, memo)
        return res


def _public_attr(k: str, v: Any) -> bool:
    return not k.startswith("_") and k not in ("training", "meta", "graph", "code") and not callable(v)


def _adopt(gm: nn.Module, modules: Dict[str, Optional[nn.Module]], params: Dict[str, Any],
           buffers: Dict[str, Any], non_persistent: Set[str], attrs: Dict[str, Any]) -> None:
    for name, child in modules.items():
        if child is not None:
            setattr(gm, name, child)
    for name, p in params.items():
        if p is not None:
            gm.register_parameter(name, p)
    for name, b in buffers.items():
        if b is not None:
            gm.register_buffer(name, b, persistent=name not in non_persistent)
    for k, v in attrs.items():
        if not hasattr(gm, k):
            setattr(gm, k, v)


def _older_checkpoint(module: nn.Module, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: a checkpoint written before per-site clipping (one
    ClippedReLU per ``nn.ReLU`` module, functional calls unclipped) loads with the function
    it had: a missing ``<module>@k`` site takes ``<module>``'s threshold, any other missing
    site stays unclipped (inf). A state_dict without any threshold is left to strict loading."""
    sites = [n for n, m in module.named_modules() if isinstance(m, CLIP_TYPES)]
    keys = [f"{prefix}{n}.threshold" for n in sites]
    missing = [k for k in keys if k not in state_dict]
    if not missing or len(missing) == len(keys):
        return
    for k in missing:
        src = k[:-len(".threshold")].rpartition("@")[0] + ".threshold"
        state_dict[k] = state_dict[src].clone() if src in state_dict else torch.tensor(float("inf"))
    warnings.warn(f"faults.clipact: an older checkpoint without per-site thresholds: {len(missing)} site(s) take "
                  "their module's threshold or stay unclipped, as when it was written", stacklevel=2)


def _trace(model: nn.Module) -> Tuple[Optional[fx.Graph], List[str], str]:
    """(graph or None, opaque module names, reason of the first failure)."""
    opaque: Set[int] = set()
    names: List[str] = []
    reason = ""
    by_name = dict(model.named_modules())
    probe = _SiteTracer(set())
    for name, m in by_name.items():  # a traced-through module would lose its hooks: keep it whole
        if name and _has_forward_hooks(m) and not probe.is_leaf_module(m, name) and \
                not any(name.startswith(n + ".") for n in names):
            opaque.add(id(m))
            names.append(name)
            reason = reason or f"{name!r} has forward hooks"
    while True:
        tracer = _SiteTracer(opaque)
        try:
            return tracer.trace(model), names, reason
        except Exception as e:  # noqa: BLE001 - any tracing failure: make the failing module opaque
            reason = reason or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            stack = [v[0] if isinstance(v, tuple) else str(v) for v in tracer.module_stack.values()]
            inner = next((n for n in reversed(stack) if n in by_name and id(by_name[n]) not in opaque), "")
            if not inner:
                return None, [""], reason
            opaque.add(id(by_name[inner]))
            names.append(inner)


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called")


def _has_forward_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _copy_hooks(dst: nn.Module, src: nn.Module, memo: Optional[Dict[int, Any]] = None) -> None:
    """The root's forward hooks (GraphModule construction and deepcopy drop them)."""
    for attr in _HOOK_DICTS:
        if attr in vars(src):
            setattr(dst, attr, copy.deepcopy(vars(src)[attr], memo) if memo is not None else copy.copy(vars(src)[attr]))


def _parent(root: nn.Module, name: str) -> Tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (root.get_submodule(parent) if parent else root), child


def replace_relu_modules(root: nn.Module, prefix: str, report: Dict[str, Any]) -> None:
    """In place: every plain ``nn.ReLU`` under ``prefix`` becomes a ClippedReLU (module mode)."""
    base = root.get_submodule(prefix) if prefix else root
    for name, m in list(base.named_modules()):
        full = f"{prefix}.{name}" if prefix and name else (prefix or name)
        kind, clip = module_kind(m)
        if type(m) is nn.ReLU:
            parent, child = _parent(root, full)
            dev = next((t.device for t in m.buffers()), _device(root))
            setattr(parent, child, ClippedReLU().to(dev))
            report["sites"][full] = "relu"
        elif isinstance(m, CLIP_TYPES):
            report["sites"][full] = "clipped"
        elif kind is not None:
            key = kind if not clip else f"{kind} (in an untraceable module)"
            report["left_alone"][key] = report["left_alone"].get(key, 0) + 1


def _device(model: nn.Module) -> torch.device:
    return next((t.device for t in model.parameters()), torch.device("cpu"))


def _site_kind(node: fx.Node, mods: Dict[str, nn.Module]) -> Tuple[Optional[str], bool]:
    if node.op == "call_module":
        return module_kind(mods[str(node.target)])
    if node.op == "call_function":
        if node.target in CLIP_FUNCS:
            return CLIP_FUNCS[node.target], True
        return BOUNDED_FUNCS.get(node.target), False
    if node.op == "call_method":
        if node.target in CLIP_METHODS:
            return CLIP_METHODS[str(node.target)], True
        return BOUNDED_METHODS.get(str(node.target)), False
    return None, False


def _out_of_place(node: fx.Node, mods: Dict[str, nn.Module]) -> bool:
    """Make an in-place activation call out of place; True when it was in place."""
    if node.op == "call_module":
        m = mods[str(node.target)]
        was = bool(getattr(m, "inplace", False))
        if was:
            m.inplace = False
        return was
    if node.op == "call_method":
        was = str(node.target).endswith("_")
        node.target = str(node.target).rstrip("_")
        return was
    if node.target in _INPLACE_TWIN:
        node.target = _INPLACE_TWIN[node.target]
        return True
    try:
        sig = inspect.signature(node.target)
        bound = sig.bind_partial(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    if not bound.arguments.get("inplace", False):
        return False
    bound.arguments["inplace"] = False
    node.args, node.kwargs = tuple(bound.args), dict(bound.kwargs)
    return True


def _owner(node: fx.Node) -> str:
    stack = list(node.meta.get("nn_module_stack", {}).values())
    return str(stack[-1][0]) if stack and isinstance(stack[-1], tuple) else ""


def _rewrite(gm: nn.Module, graph: fx.Graph, report: Dict[str, Any]) -> None:
    mods = dict(gm.named_modules())
    dev = _device(gm)
    calls: Dict[str, int] = {}
    for node in list(graph.nodes):
        kind, clip = _site_kind(node, mods)
        if kind is None:
            continue
        if not clip:
            report["left_alone"][kind] = report["left_alone"].get(kind, 0) + 1
            continue
        if kind == "clipped":  # already a site (FT-ClipAct applied before)
            report["sites"][str(node.target)] = "clipped"
            continue
        x = node.args[0] if node.args else node.kwargs.get("input")
        if node.op == "call_module":
            target = str(node.target)
            k = calls[target] = calls.get(target, -1) + 1
            plain_relu = type(mods[target]) is nn.ReLU
            name = target if plain_relu and k == 0 else f"{target}@{k}"
        else:
            owner = _owner(node)
            key = f"{owner}.{kind}_fn" if owner else f"{kind}_fn"
            k = calls[key] = calls.get(key, -1) + 1
            name, plain_relu = f"{key}@{k}", kind == "relu"
        parent, child = _parent(gm, name)
        inplace = _out_of_place(node, mods)
        if plain_relu:  # the ClippedReLU computes the ReLU itself: it replaces the call
            parent.add_module(child, ClippedReLU().to(dev))  # replaces the nn.ReLU at its own name
            with graph.inserting_after(node):
                new = graph.call_module(name, (x,))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
        else:
            parent.add_module(child, ActivationClip(kind).to(dev))
            with graph.inserting_after(node):
                new = graph.call_module(name, (x, node))
            node.replace_all_uses_with(new, delete_user_cb=lambda u, new=new: u is not new)
        if inplace and isinstance(x, fx.Node):  # later readers of x saw the activated tensor
            order = {n: i for i, n in enumerate(graph.nodes)}
            for u in list(x.users):
                if u is not new and order[u] > order[new]:
                    u.replace_input_with(x, new)
        report["sites"][name] = kind


def clip_sites(model: nn.Module) -> Tuple[nn.Module, Dict[str, Any]]:
    """Give every activation call site of ``model`` its own clip module (threshold inf).

    ``model`` is changed (deep-copy it first). Returns the clipped model (a
    :class:`ClipActGraph`, or ``model`` itself when even its top level cannot be traced)
    and a report: ``traced`` (bool), ``opaque`` (modules that could not be traced),
    ``reason`` (the first tracing error), ``sites`` (name -> kind, in execution order when
    traced), ``left_alone`` (bounded activation kinds -> count of sites).
    """
    report: Dict[str, Any] = {"traced": False, "opaque": [], "reason": "", "sites": {}, "left_alone": {}}
    graph, opaque, reason = _trace(model)
    report["reason"] = reason
    if graph is None:
        report["opaque"] = [""]
        replace_relu_modules(model, "", report)
        return model, report
    report["traced"], report["opaque"] = True, opaque
    gm = ClipActGraph(model, graph, class_name=type(model).__name__)
    _adopt(gm, dict(model._modules), dict(model._parameters), dict(model._buffers),
           set(model._non_persistent_buffers_set), {k: v for k, v in vars(model).items() if _public_attr(k, v)})
    gm.train(model.training)
    _copy_hooks(gm, model)
    gm.register_load_state_dict_pre_hook(_older_checkpoint)
    _rewrite(gm, gm.graph, report)
    for name in opaque:
        replace_relu_modules(gm, name, report)
    gm.graph.lint()
    gm.recompile()
    return gm, report
