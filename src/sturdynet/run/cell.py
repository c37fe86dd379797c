"""The work of one cell (and of one base model), as plain functions of plain data.

Executors (:mod:`sturdynet.run.executor`) run these in the driver, in pool processes or on
Ray workers; the same code runs everywhere, so results do not depend on the executor.
A task is a dict of the (picklable) recipe, JSON-able values and checkpoint bytes; the result is the record to
store plus the checkpoint bytes to write. Workers never touch the run folder: the driver
is its only writer. Each task seeds torch itself and sets the driver's thread count, so a
cell's numbers do not depend on which cells ran before it in the same process.
"""
from __future__ import annotations

import copy
import logging
import time
import zlib
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..checks.base import CheckContext
from ..core import progress as progress_scope
from ..core.method import run_steps
from ..core.params import to_dict
from ..core.registry import CHECKS
from ..core.storage import compression_facts
from ..data import load_data
from ..models.arch import arch_of
from ..models.common import model_for_data
from ..train.context import training_context
from ..train.loop import fit
from .checkpoint import checkpoint_bytes, load_checkpoint_bytes
from .recipe import Recipe, VariantSpec, parse_recipe
from .store import encode_bits, stable_hash

log = logging.getLogger(__name__)
Progress = Optional[Callable[[dict], None]]

_RECIPES: Dict[str, Recipe] = {}
_DATA: Dict[Tuple[str, int], Any] = {}


def variant_seed(seed: int, name: str) -> int:
    """A per-variant seed that does not depend on the variant's position in the recipe."""
    return seed + zlib.crc32(name.encode()) % 100_000


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name} requested but CUDA is not available")
    return dev


def error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def check_key(c) -> str:
    return stable_hash(c.check.to_dict("check"))


def _emit(progress: Progress, **event: Any) -> None:
    if progress is not None:
        progress(event)


def _recipe(r: Any) -> Recipe:
    """The task's recipe: the (pickled) Recipe itself, or a recipe mapping parsed once per process."""
    if isinstance(r, Recipe):
        return r
    key = stable_hash(r)
    if key not in _RECIPES:
        _RECIPES.clear()
        _RECIPES[key] = parse_recipe(r)
    return _RECIPES[key]


def _data(recipe: Recipe, seed: int):
    key = (stable_hash(recipe.data.to_dict()), seed)
    if key not in _DATA:
        if len(_DATA) > 4:
            _DATA.clear()
        _DATA[key] = load_data(recipe.data, seed)
    return _DATA[key]


def _setup(task: Dict[str, Any]) -> Tuple[Recipe, Any, torch.device]:
    if task.get("threads"):
        torch.set_num_threads(int(task["threads"]))
    recipe = _recipe(task["recipe"])
    return recipe, _data(recipe, task["seed"]), resolve_device(task.get("device") or recipe.device)


def model_macs(model: nn.Module, data: Any) -> Optional[int]:
    """Dense multiply-accumulates of one example (None when the model cannot be traced so)."""
    from ..prune.macs import count_macs

    try:
        return int(count_macs(model, (data.in_channels, *data.input_size))["macs"])
    except Exception:  # noqa: BLE001 - a fact for the report, never a reason to fail
        return None


def _factory(recipe: Recipe) -> Optional[str]:
    return getattr(recipe.model, "factory", None)


def train_base(task: Dict[str, Any], progress: Progress = None) -> Dict[str, Any]:
    """Train the base model of ``task["seed"]`` (or load the recipe's given weights);
    returns ``{"record", "checkpoint"}``."""
    from ..models.spec import normalization_warning

    recipe, data, device = _setup(task)
    seed = task["seed"]
    torch.manual_seed(seed)
    model = model_for_data(recipe.model, data).to(device)
    init_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    suffix = f" (seed {seed})" if task.get("show_seed") else ""
    if getattr(recipe.model, "weights", None):  # a trained model: no base training
        _emit(progress, event="stage", stage="load given weights" + suffix)
        history: list = []
    else:
        _emit(progress, event="stage", stage="train base model" + suffix, epochs=recipe.train.epochs)
        history = fit(model, data, recipe.train, seed=seed, progress=progress, device=device)
    arch = arch_of(recipe.model, data, (), recipe.data)
    blob = checkpoint_bytes(model, arch, {"history": history, "init_state": init_state})
    rec = {"status": "ok", "seconds": time.perf_counter() - t0, "history": history, "seed": seed,
           "macs": model_macs(model.eval(), data)}
    warning = normalization_warning(model, recipe.model)
    if warning:
        rec["warnings"] = [warning]
    return {"record": rec, "checkpoint": blob}


def _spec(recipe: Recipe, name: str) -> VariantSpec:
    for v in recipe.all_variants:
        if v.name == name:
            return v
    raise ValueError(f"variant {name!r} is not in the recipe")


def new_record(spec: VariantSpec) -> Dict[str, Any]:
    d = spec.to_dict()
    params = {k: v for k, v in d.items() if k not in ("name", "method", "finetune_epochs", "finetune")}
    return {"name": spec.name, "method": spec.method, "params": params, "spec_key": stable_hash(d)}


def _build(recipe: Recipe, spec: VariantSpec, base: nn.Module, init_state, data, seed: int, device,
           rec: Dict[str, Any], progress: Progress) -> nn.Module:
    vseed = variant_seed(seed, spec.name)
    rec["seconds"] = {"compress": 0.0}
    if not spec.steps and spec.finetune is None:
        return base
    ctx = training_context(data, recipe.train, seed=vseed, device=device, init_state=init_state, progress=progress)
    _emit(progress, event="stage", stage=f"{spec.name}: compress")
    t0 = time.perf_counter()
    model = run_steps(copy.deepcopy(base), spec.steps, ctx).to(device)
    rec["seconds"]["compress"] = time.perf_counter() - t0
    if ctx.log:
        rec["method_log"] = to_dict(ctx.log)
    if spec.finetune is not None and spec.finetune.epochs > 0:
        _emit(progress, event="stage", stage=f"{spec.name}: fine-tune", epochs=spec.finetune.epochs)
        t0 = time.perf_counter()
        rec["finetune_history"] = fit(model, data, spec.finetune, seed=vseed, progress=progress, device=device)
        rec["seconds"]["finetune"] = time.perf_counter() - t0
    model.eval()
    return model


def _evaluate(recipe: Recipe, spec: VariantSpec, model: nn.Module, models: Dict[str, nn.Module], data, seed: int,
              device, rec: Dict[str, Any], progress: Progress) -> None:
    metrics = rec.setdefault("metrics", {})
    ctx = CheckContext(device=device, seed=seed, models=models, variant=spec.name, results=metrics,
                       progress=progress)
    t0 = time.perf_counter()
    errors = []
    for c in recipe.evaluate:
        if c.id in metrics and "error" not in metrics[c.id] and metrics[c.id].get("check_key") == check_key(c):
            continue
        _emit(progress, event="stage", stage=f"{spec.name}: {c.id}")
        try:
            with progress_scope.reporting(progress, f"{spec.name}: {c.id}"):
                m = CHECKS.create_from(c.check, model, data, ctx)
        except Exception as e:  # noqa: BLE001 - a failing check is recorded, the cell goes on
            log.warning("variant %s: check %s failed: %s", spec.name, c.id, e)
            metrics[c.id] = {"error": error_text(e)}
            errors.append(f"check {c.id}: {error_text(e)}")
            continue
        if "per_sample" in m and not isinstance(m["per_sample"], str):
            m["per_sample"] = encode_bits(m["per_sample"])
        m["check_key"] = check_key(c)
        metrics[c.id] = to_dict(m)
    secs = rec.setdefault("seconds", {})
    secs["evaluate"] = secs.get("evaluate", 0.0) + time.perf_counter() - t0
    rec["status"] = "failed" if errors else "ok"
    rec["error"] = "; ".join(errors) or None


def run_cell(task: Dict[str, Any], progress: Progress = None) -> Dict[str, Any]:
    """Build (or reload) one variant on its seed's base model and run the checks.

    ``task["todo"]``: ``build`` (compress, then evaluate), ``build-only`` (compress; record
    status ``built``: another cell's check needs this model), ``evaluate`` (``task["model"]``
    holds the variant's checkpoint; only checks missing from ``task["old"]`` run).
    Returns ``{"record", "checkpoint"}`` (checkpoint bytes only when a model was built).
    Failures inside the variant are recorded in the record (``status: failed``).
    """
    recipe, data, device = _setup(task)
    seed, todo = task["seed"], task["todo"]
    spec = _spec(recipe, task["variant"])
    base, blob = load_checkpoint_bytes(task["base"], f"base model of seed {seed}", _factory(recipe))
    base = base.to(device).eval()
    init_state = blob["extra"].get("init_state")
    torch.manual_seed(variant_seed(seed, spec.name))
    models: Dict[str, nn.Module] = {"dense": base}
    for name, b in (task.get("deps") or {}).items():
        models[name] = load_checkpoint_bytes(b, f"model of variant {name}", _factory(recipe))[0].to(device).eval()
    rec = new_record(spec)
    rec["seed"] = seed
    out_ckpt = None
    try:
        if todo == "evaluate":
            model = base if task.get("model") is None else \
                load_checkpoint_bytes(task["model"], f"model of variant {spec.name}", _factory(recipe))[0].to(device).eval()
            rec = copy.deepcopy(task["old"])
        else:
            model = _build(recipe, spec, base, init_state, data, seed, device, rec, progress)
            if spec.steps or spec.finetune is not None:
                out_ckpt = checkpoint_bytes(model, arch_of(recipe.model, data, spec.steps, recipe.data))
            facts = compression_facts(model)
            dense = compression_facts(base)["size_bytes"]
            facts["compression_ratio"] = dense / max(1, facts["size_bytes"])
            facts["dense_size_bytes"] = dense
            facts["params_count"] = facts.pop("params")
            facts["macs"] = model_macs(model, data)
            rec.update(facts)
        if todo == "build-only":
            rec["status"] = "built"
        else:
            models.setdefault(spec.name, model)
            _evaluate(recipe, spec, model, models, data, seed, device, rec, progress)
    except Exception as e:  # noqa: BLE001 - a failing variant is recorded, the sweep goes on
        log.warning("variant %s (seed %s) failed: %s", spec.name, seed, e)
        rec.update(status="failed", error=error_text(e))
    return {"record": rec, "checkpoint": out_ckpt}
