"""Model specs from anywhere: built-in names, ``torchvision.<name>``, ``timm.<name>``, factories.

A recipe's ``model`` (and ``sturdynet evaluate --model``) is one of::

    {name: small_cnn, width: 8}                                  # a registered sturdynet model
    {name: torchvision.resnet18, num_classes: 10, weights: w.pt} # torchvision.models.get_model
    {name: timm.mobilenetv3_small_100, pretrained: false}        # timm.create_model
    {factory: "my_pkg.nets:build_net", kwargs: {width: 32}}      # any importable callable

plus, for every kind, ``weights`` (a plain PyTorch state_dict or a sturdynet checkpoint,
read with ``torch.load(..., weights_only=True)``; a model with weights is not retrained)
and ``input_normalization: {mean: [...], std: [...]}``, which wraps the network as
``Normalize -> net`` so that attacks, faults and corruptions all work on [0, 1] pixels.

torchvision and timm are imported only when a spec names them. For torchvision and
timm, ``num_classes`` defaults to the data set's class count and (timm) ``in_chans`` to
its channel count; a factory receives exactly its ``kwargs``.
"""
from __future__ import annotations

import difflib
import importlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.params import ConfigError, kwargs_of, to_dict
from ..core.registry import MODELS
from .common import Normalize, build_model

EXTERNAL = ("torchvision.", "timm.")
_SPEC_KEYS = ("name", "factory", "kwargs", "weights", "input_normalization")


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec; ``params`` is the registered dataclass for built-in models,
    ``extra`` the keyword arguments of torchvision / timm models and factories."""

    name: Optional[str] = None
    params: Any = None
    factory: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    weights: Optional[str] = None
    normalization: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None

    @property
    def kind(self) -> str:
        """``builtin``, ``torchvision``, ``timm`` or ``factory``."""
        if self.factory:
            return "factory"
        if self.name and self.name.startswith(EXTERNAL):
            return self.name.split(".", 1)[0]
        return "builtin"

    @property
    def label(self) -> str:
        return self.name or self.factory or "model"

    def kwargs(self) -> Dict[str, Any]:
        return kwargs_of(self.params) if self.kind == "builtin" else dict(self.extra)

    def to_dict(self, key: str = "name") -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.factory:
            out["factory"] = self.factory
            if self.extra:
                out["kwargs"] = to_dict(self.extra)
        else:
            out[key] = self.name
            out.update(to_dict(self.kwargs()))
        if self.weights:
            out["weights"] = self.weights
        if self.normalization:
            out["input_normalization"] = {"mean": list(self.normalization[0]), "std": list(self.normalization[1])}
        return out


def _normalization(value: Any, path: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    if not isinstance(value, Mapping) or set(value) != {"mean", "std"}:
        raise ConfigError(path, f"must be a mapping {{mean: [...], std: [...]}}, got {value!r}")
    try:
        mean = tuple(float(v) for v in value["mean"])
        std = tuple(float(v) for v in value["std"])
    except (TypeError, ValueError):
        raise ConfigError(path, f"mean and std must be lists of numbers, got {value!r}") from None
    if not mean or len(mean) != len(std):
        raise ConfigError(path, f"mean has {len(mean)} values but std has {len(std)}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"{path}.std", f"must be positive, got {list(std)}")
    return mean, std


def parse_model_spec(data: Any, path: str = "model") -> ModelSpec:
    """Validate a recipe's ``model`` value (a name or a mapping) into a :class:`ModelSpec`.

    Raises:
        ConfigError: unknown built-in name (with the nearest names), a malformed
            factory string, or a bad ``input_normalization``.
    """
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"must be a model name or a mapping with a 'name' or 'factory', got {data!r}")
    weights = data.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise ConfigError(f"{path}.weights", f"must be a file path, got {weights!r}")
    norm = _normalization(data["input_normalization"], f"{path}.input_normalization") \
        if data.get("input_normalization") is not None else None
    if "factory" in data:
        fac = data["factory"]
        if "name" in data:
            raise ConfigError(f"{path}.factory", "give either 'name' or 'factory', not both")
        if not isinstance(fac, str) or fac.count(":") != 1 or not all(fac.split(":")):
            raise ConfigError(f"{path}.factory", f"must be 'package.module:function', got {fac!r}")
        kw = data.get("kwargs") or {}
        if not isinstance(kw, Mapping):
            raise ConfigError(f"{path}.kwargs", f"must be a mapping, got {kw!r}")
        for k in data:
            if k not in _SPEC_KEYS:
                raise ConfigError(f"{path}.{k}", f"unknown key (a factory takes {', '.join(_SPEC_KEYS[1:])})")
        return ModelSpec(factory=fac, extra=dict(kw), weights=weights, normalization=norm)
    if "name" not in data:
        raise ConfigError(f"{path}.name", "is required (or give 'factory: package.module:function')")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}.name", f"must be a model name, got {name!r}")
    rest = {k: v for k, v in data.items() if k not in ("name", "weights", "input_normalization")}
    if name.startswith(EXTERNAL):
        if not name.split(".", 1)[1]:
            raise ConfigError(f"{path}.name", f"{name!r} names no model")
        return ModelSpec(name=name, extra=rest, weights=weights, normalization=norm)
    if name not in MODELS:
        raise ConfigError(f"{path}.name", MODELS.unknown(name) + "; or torchvision.<name>, timm.<name>, "
                          "or factory: 'package.module:function'")
    return ModelSpec(name=name, params=MODELS.validate(name, rest, path), weights=weights, normalization=norm)


def _nearest(name: str, names: Sequence[str], what: str) -> str:
    near = difflib.get_close_matches(name, list(names), n=5, cutoff=0.5)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    return f"unknown {what} model {name!r}{hint}"


def _import_extra(pkg: str) -> Any:
    try:
        return importlib.import_module(pkg)
    except Exception as e:  # noqa: BLE001 - torchvision fails with RuntimeError beside a CPU torch build
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError("model.name", f"needs {pkg}, which does not import ({type(e).__name__}: {first}); "
                          f"install it with pip install 'sturdynet[{pkg}]'") from None


def _torchvision(name: str, kwargs: Dict[str, Any], num_classes: int) -> nn.Module:
    """``torchvision.models.get_model``; only an unknown name consults ``list_models`` (for the
    nearest names)."""
    tv = _import_extra("torchvision")
    kwargs.setdefault("num_classes", num_classes)
    try:
        return tv.models.get_model(name, **kwargs)
    except (ValueError, KeyError) as e:
        names = tv.models.list_models()
        if name in names:
            raise ConfigError("model", f"torchvision.{name}: {e}") from None
        raise ConfigError("model.name", _nearest(f"torchvision.{name}", [f"torchvision.{n}" for n in names],
                                                 "torchvision")) from None


def _timm(name: str, kwargs: Dict[str, Any], in_channels: int, num_classes: int) -> nn.Module:
    """``timm.create_model`` (never downloads: ``pretrained`` defaults to false); only an
    unknown name consults ``list_models``."""
    timm = _import_extra("timm")
    kwargs.setdefault("num_classes", num_classes)
    kwargs.setdefault("in_chans", in_channels)
    kwargs.setdefault("pretrained", False)
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "nknown model" not in str(e):
            raise
        names = timm.list_models()
        raise ConfigError("model.name", _nearest(f"timm.{name}", [f"timm.{n}" for n in names], "timm")) from None


def resolve_factory(ref: str) -> Any:
    """The callable named by ``'package.module:function'`` (a dotted attribute path is allowed).

    Raises:
        ConfigError: naming the module that does not import or the missing attribute.
    """
    mod_name, attr = ref.split(":", 1)
    try:
        obj = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("model.factory", f"cannot import module {mod_name!r} ({type(e).__name__}: {first})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError("model.factory", f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError("model.factory", f"{ref} is not callable")
    return obj


class InputNormalized(nn.Sequential):
    """``Normalize(mean, std) -> net``: a model that expects normalized input, fed [0, 1] pixels."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(OrderedDict([("normalize", Normalize(mean, std)), ("net", net)]))


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Tensors of a plain state_dict or a sturdynet checkpoint, read with ``weights_only=True``.

    Raises:
        ValueError: missing file, a pickle that needs code (refused), or no tensors.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"weights file not found: {p}")
    from ..core.weights import is_safetensors, load_legacy, load_weights as read_weights

    if is_safetensors(p):  # a sturdynet checkpoint (hash verified) or a plain safetensors state_dict
        try:
            header, tensors, _ = read_weights(p, what="weights file")
            blob = {**header, "state_dict": {k[len("state/"):]: v for k, v in tensors.items()
                                             if k.startswith("state/")}}
        except ValueError as e:
            if "without sturdynet's header" not in str(e):
                raise
            from safetensors.torch import load as st_load

            try:
                blob = st_load(p.read_bytes())
            except Exception as err:  # noqa: BLE001 - a damaged file
                raise ValueError(f"{p}: damaged safetensors file ({type(err).__name__})") from None
    else:
        blob = load_legacy(p, "weights file")  # weights_only=True; torch's advice is never shown
    if isinstance(blob, Mapping) and blob.get("format") == "sturdynet-checkpoint":
        if blob.get("arch", {}).get("steps"):
            raise ValueError(f"{p}: a checkpoint of a compressed variant; evaluate it directly "
                             "(sturdynet evaluate CHECKPOINT)")
        blob = blob["state_dict"]
    elif isinstance(blob, Mapping) and isinstance(blob.get("state_dict"), Mapping):
        blob = blob["state_dict"]
    if not isinstance(blob, Mapping) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise ValueError(f"{p}: not a state_dict (a mapping of names to tensors)")
    out = {str(k): v for k, v in blob.items()}
    if all(k.startswith("module.") for k in out):  # saved from DataParallel
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, naming the first mismatching key and shape on failure."""
    own = model.state_dict()
    for k, v in own.items():
        if k not in state:
            raise ValueError(f"{source} does not match the architecture: missing key {k!r} (shape {tuple(v.shape)})")
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{source} does not match the architecture: key {k!r} has shape "
                             f"{tuple(state[k].shape)} in the file but {tuple(v.shape)} in the model")
    extra = [k for k in state if k not in own]
    if extra:
        raise ValueError(f"{source} does not match the architecture: unexpected key {extra[0]!r} "
                         f"(shape {tuple(state[extra[0]].shape)})")
    model.load_state_dict(state, strict=True)


def build_from_spec(spec: ModelSpec, in_channels: int, num_classes: int, input_size: Tuple[int, int],
                    mean: Sequence[float] = (), std: Sequence[float] = (), load: bool = True,
                    trusted_factory: Optional[str] = None) -> nn.Module:
    """Build the model of ``spec`` for data with these facts; ``load`` reads ``spec.weights``.

    A factory named in ``spec`` is imported only when ``trusted_factory`` is None (the
    caller's own spec) or equals it (a spec read back from a file).
    """
    kind = spec.kind
    if kind == "builtin":
        m, s = spec.normalization or (mean, std)
        net = build_model(spec.name, in_channels, num_classes, input_size, m, s, **spec.kwargs())
        wrapped = net
    else:
        kwargs = spec.kwargs()
        if kind == "torchvision":
            net = _torchvision(spec.name.split(".", 1)[1], kwargs, num_classes)
        elif kind == "timm":
            net = _timm(spec.name.split(".", 1)[1], kwargs, in_channels, num_classes)
        else:
            if trusted_factory is not None and trusted_factory != spec.factory:
                raise ValueError(f"the model is built by factory {spec.factory!r}; pass it explicitly "
                                 f"(--model-factory {spec.factory}) to allow importing it")
            net = resolve_factory(spec.factory)(**kwargs)
            if not isinstance(net, nn.Module):
                raise ConfigError("model.factory", f"{spec.factory} returned {type(net).__name__}, not an nn.Module")
        wrapped = InputNormalized(net, *spec.normalization) if spec.normalization else net
    if load and spec.weights:
        state = read_state_dict(spec.weights)
        outer = wrapped.state_dict().keys() if wrapped is not net else ()
        target = wrapped if outer and all(k in outer for k in state) else net
        load_weights(target, state, f"weights {spec.weights}")
    return wrapped


def normalization_warning(model: nn.Module, spec: Any) -> Optional[str]:
    """A warning when neither the spec nor the model's first layer normalizes the input."""
    if isinstance(spec, ModelSpec) and (spec.normalization or spec.kind == "builtin"):
        return None
    if not isinstance(spec, ModelSpec):
        return None
    for m in model.modules():
        if isinstance(m, Normalize) or (hasattr(m, "mean") and hasattr(m, "std") and not list(m.children())):
            return None
        if not list(m.children()):
            return (f"model {spec.label}: the first layer ({type(m).__name__}) is not known to normalize its "
                    "input and no input_normalization is declared; attacks, faults and corruptions see raw "
                    "[0, 1] pixels (declare model.input_normalization if the network expects normalized input)")
    return None


def known_names() -> List[str]:
    """Built-in model names (external ones are listed by their own packages)."""
    return MODELS.names()
