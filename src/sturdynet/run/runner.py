"""Run a recipe: train the base model, build each variant, evaluate it, write results.

The run folder holds ``results.json`` (rewritten atomically after every variant),
``base.pt`` and ``variants/<name>.pt`` checkpoints. Running the same recipe into the
same folder resumes: the base model is loaded instead of retrained, finished variants
are skipped, and a finished variant that lacks a newly added check only runs that
check. A variant that fails (diverging loss, a method error, a check error) is
recorded with ``status: failed`` and its reason; the others still run.
"""
from __future__ import annotations

import copy
import logging
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from ..core import progress as progress_scope
from ..core.method import run_steps
from ..core.params import to_dict
from ..data import load_data
from ..checks.base import CheckContext
from ..models.common import model_for_data
from .recipe import Recipe, VariantSpec
from ..core.registry import CHECKS
from ..core.storage import compression_facts
from ..models.arch import arch_of
from ..models.spec import normalization_warning
from .checkpoint import load_checkpoint, save_checkpoint
from ..train.context import training_context
from ..train.loop import fit
from .store import ResultsStore, encode_bits, git_commit, machine, stable_hash, versions

log = logging.getLogger(__name__)
Progress = Optional[Callable[[dict], None]]


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


def model_macs(model: nn.Module, data: Any) -> Optional[int]:
    """Dense multiply-accumulates of one example (None when the model cannot be traced so)."""
    from ..prune.macs import count_macs

    try:
        return int(count_macs(model, (data.in_channels, *data.input_size))["macs"])
    except Exception:  # noqa: BLE001 - a fact for the report, never a reason to fail
        return None


def variant_seed(seed: int, name: str) -> int:
    """A per-variant seed that does not depend on the variant's position in the recipe."""
    return seed + zlib.crc32(name.encode()) % 100_000


def _emit(progress: Progress, **event: Any) -> None:
    if progress is not None:
        progress(event)


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class Runner:
    """Runs one recipe into one folder; see the module docstring."""

    def __init__(self, recipe: Recipe, out_dir, progress: Progress = None, fresh: bool = False) -> None:
        self.recipe = recipe
        self.dir = Path(out_dir)
        self.progress = progress
        self.device = resolve_device(recipe.device)
        if fresh and (self.dir / "results.json").exists():
            (self.dir / "results.json").unlink()
            for p in [self.dir / "base.pt", *self.dir.glob("variants/*.pt")]:
                p.unlink(missing_ok=True)
        self.store = ResultsStore(self.dir)
        self.data = None
        self.base: Optional[nn.Module] = None
        self.models: Dict[str, nn.Module] = {}
        self.init_state: Optional[Dict[str, torch.Tensor]] = None

    # -- base model --------------------------------------------------------------------
    def base_key(self) -> str:
        r = self.recipe.to_dict()
        return stable_hash({k: r[k] for k in ("seed", "data", "model", "train")})

    def _train_base(self) -> nn.Module:
        ckpt = self.dir / "base.pt"
        arch = arch_of(self.recipe.model, self.data, (), self.recipe.data)
        if ckpt.exists() and self.store.data.get("base", {}).get("status") == "ok":
            _emit(self.progress, event="stage", stage="load base model")
            model, blob = load_checkpoint(ckpt, self.device, trusted_factory=self.recipe.model.factory)
            self.init_state = blob["extra"].get("init_state")
            return model
        torch.manual_seed(self.recipe.seed)
        model = model_for_data(self.recipe.model, self.data).to(self.device)
        self.init_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        t0 = time.perf_counter()
        if self.recipe.model.weights:  # a trained model: no base training
            _emit(self.progress, event="stage", stage="load given weights")
            history = []
        else:
            _emit(self.progress, event="stage", stage="train base model", epochs=self.recipe.train.epochs)
            history = fit(model, self.data, self.recipe.train, seed=self.recipe.seed, progress=self.progress,
                          device=self.device)
        save_checkpoint(ckpt, model, arch, {"history": history, "init_state": self.init_state})
        self.store.data["base"] = {"status": "ok", "seconds": time.perf_counter() - t0, "history": history,
                                   "checkpoint": ckpt.name}
        self.store.save()
        return model

    # -- variants --------------------------------------------------------------------------
    def _record(self, spec: VariantSpec) -> Dict[str, Any]:
        d = spec.to_dict()
        params = {k: v for k, v in d.items() if k not in ("name", "method", "finetune_epochs", "finetune")}
        return {"name": spec.name, "method": spec.method, "params": params, "spec_key": stable_hash(d)}

    def _build(self, spec: VariantSpec, rec: Dict[str, Any]) -> nn.Module:
        seed = variant_seed(self.recipe.seed, spec.name)
        rec["seconds"] = {"compress": 0.0}
        ctx = training_context(self.data, self.recipe.train, seed=seed, device=self.device,
                               init_state=self.init_state, progress=self.progress)
        t0 = time.perf_counter()
        if not spec.steps and spec.finetune is None:
            return self.base
        _emit(self.progress, event="stage", stage=f"{spec.name}: compress")
        model = run_steps(copy.deepcopy(self.base), spec.steps, ctx).to(self.device)
        rec["seconds"]["compress"] = time.perf_counter() - t0
        if ctx.log:
            rec["method_log"] = to_dict(ctx.log)
        if spec.finetune is not None and spec.finetune.epochs > 0:
            _emit(self.progress, event="stage", stage=f"{spec.name}: fine-tune", epochs=spec.finetune.epochs)
            t0 = time.perf_counter()
            rec["finetune_history"] = fit(model, self.data, spec.finetune, seed=seed, progress=self.progress,
                                          device=self.device)
            rec["seconds"]["finetune"] = time.perf_counter() - t0
        model.eval()
        return model

    def _evaluate(self, spec: VariantSpec, model: nn.Module, rec: Dict[str, Any]) -> None:
        metrics = rec.setdefault("metrics", {})
        ctx = CheckContext(device=self.device, seed=self.recipe.seed, models=self.models, variant=spec.name,
                           results=metrics, progress=self.progress)
        t0 = time.perf_counter()
        errors = []
        for c in self.recipe.evaluate:
            if c.id in metrics and "error" not in metrics[c.id] and \
                    metrics[c.id].get("check_key") == stable_hash(c.check.to_dict("check")):
                continue
            _emit(self.progress, event="stage", stage=f"{spec.name}: {c.id}")
            try:
                with progress_scope.reporting(self.progress, f"{spec.name}: {c.id}"):
                    m = CHECKS.create_from(c.check, model, self.data, ctx)
            except Exception as e:  # noqa: BLE001 - a failing check is recorded, the run goes on
                log.warning("variant %s: check %s failed: %s", spec.name, c.id, e)
                metrics[c.id] = {"error": _error_text(e)}
                errors.append(f"check {c.id}: {_error_text(e)}")
                continue
            if "per_sample" in m and not isinstance(m["per_sample"], str):
                m["per_sample"] = encode_bits(m["per_sample"])
            m["check_key"] = stable_hash(c.check.to_dict("check"))
            metrics[c.id] = to_dict(m)
        rec.setdefault("seconds", {})["evaluate"] = rec.get("seconds", {}).get("evaluate", 0.0) + time.perf_counter() - t0
        rec["status"] = "failed" if errors else "ok"
        rec["error"] = "; ".join(errors) or None

    def _variant_model(self, spec: VariantSpec) -> Optional[nn.Module]:
        if not spec.steps and spec.finetune is None:
            return self.base
        path = self.dir / "variants" / f"{spec.name}.pt"
        if path.exists():
            model, _ = load_checkpoint(path, self.device, trusted_factory=self.recipe.model.factory)
            return model
        return None

    def _needs_work(self, spec: VariantSpec, old: Optional[Dict[str, Any]], key: str) -> str:
        """"skip", "evaluate" (model kept, some checks missing) or "build"."""
        if not old or old.get("spec_key") != key or old.get("status") not in ("ok", "failed"):
            return "build"
        if old.get("status") == "failed" and "metrics" not in old:
            return "build"
        done = old.get("metrics", {})
        missing = [c for c in self.recipe.evaluate
                   if c.id not in done or "error" in done[c.id]
                   or done[c.id].get("check_key") != stable_hash(c.check.to_dict("check"))]
        return "evaluate" if missing else "skip"

    def run_variant(self, spec: VariantSpec) -> Dict[str, Any]:
        order = [v.name for v in self.recipe.variants]
        rec = self._record(spec)
        old = self.store.variant(spec.name)
        todo = self._needs_work(spec, old, rec["spec_key"])
        if todo == "skip":
            _emit(self.progress, event="skip", variant=spec.name)
            return old
        model = None
        if todo == "evaluate":
            model = self._variant_model(spec)
            if model is not None:
                rec = old
        try:
            if model is None:
                model = self._build(spec, rec)
                if spec.steps or spec.finetune is not None:
                    save_checkpoint(self.dir / "variants" / f"{spec.name}.pt", model,
                                    arch_of(self.recipe.model, self.data, spec.steps, self.recipe.data))
                facts = compression_facts(model)
                facts["compression_ratio"] = self.models["dense"].size_bytes / max(1, facts["size_bytes"])
                facts["dense_size_bytes"] = self.models["dense"].size_bytes
                facts["params_count"] = facts.pop("params")
                facts["macs"] = model_macs(model, self.data)
                rec.update(facts)
            self.models[spec.name] = model
            self._evaluate(spec, model, rec)
        except Exception as e:  # noqa: BLE001 - a failing variant is recorded, the run goes on
            log.warning("variant %s failed: %s", spec.name, e)
            rec.update(status="failed", error=_error_text(e))
        self.store.put_variant(rec, order)
        _emit(self.progress, event="variant", variant=spec.name, status=rec["status"])
        return rec

    # -- whole run -------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        r = self.recipe
        _emit(self.progress, event="stage", stage="load data")
        self.data = load_data(r.data, r.seed)
        header = {"name": r.name, "recipe": r.to_dict(), "seed": r.seed, "versions": versions(),
                  "git_commit": git_commit(), "machine": machine(str(self.device)), "data": self.data.describe()}
        self.store.start(header, self.base_key())
        self.base = self._train_base()
        self.base.eval()
        warning = normalization_warning(self.base, r.model)
        if warning:
            log.warning("%s", warning)
            self.store.data["warnings"] = [warning]
            self.store.save()
        self.base.size_bytes = compression_facts(self.base)["size_bytes"]  # type: ignore[attr-defined]
        self.store.data.setdefault("base", {})["macs"] = model_macs(self.base, self.data)
        self.models["dense"] = self.base
        for spec in r.variants:
            self.run_variant(spec)
        return self.store.data


def run_recipe(recipe: Recipe, out_dir, progress: Progress = None, fresh: bool = False) -> Dict[str, Any]:
    """Run ``recipe`` into ``out_dir`` (resuming what is there) and return the results."""
    return Runner(recipe, out_dir, progress, fresh).run()
