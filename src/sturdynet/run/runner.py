"""Run a recipe: train the base model(s), build each variant, evaluate it, store the results.

The runner is the driver of a sweep: it expands the recipe into cells (seed x variant,
:mod:`sturdynet.run.sweep`), hands base-model training and cells to an executor
(in-process, process pool or Ray: :mod:`sturdynet.run.executor`) and is the only writer of
the run folder: ``results.sqlite`` (the source of truth), ``results.json`` (a view of it,
rewritten after every cell), ``base.safetensors`` and ``variants/<name>.safetensors`` (with a
``sweep`` section: ``seeds/<seed>/base.safetensors`` and ``seeds/<seed>/variants/<name>.safetensors``).
Each checkpoint's SHA-256 is recorded (``sha256`` of the base and cell records); on resume a
checkpoint that is damaged, replaced or missing its record is rebuilt, not used.

Running the same recipe into the same folder resumes: base models are loaded instead of
retrained, finished cells are skipped, and a finished cell that lacks a newly added check
only runs that check. A cell that fails (diverging loss, a method error, a check error, a
worker crash) is recorded with ``status: failed`` and its reason, and run again up to
``retries`` times; the others still run. A check that names another variant (a transfer
attack's ``surrogate``, a corruption ``baseline``) gets that variant's model of the same
seed: such variants are built first.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
from torch import nn

from ..core.atomic import write_bytes_atomic
from .cell import Progress, check_key, error_text, resolve_device, variant_seed  # noqa: F401 (re-exported)
from ..core.names import safe_name
from .checkpoint import SUFFIX, checkpoint_sha256, load_checkpoint, verify_checkpoint
from .executor import Executor, InProcess, make_executor
from .recipe import Recipe, VariantSpec
from .store import ResultsStore, environment, git_commit, machine, stable_hash, versions
from .sweep import Cell

log = logging.getLogger(__name__)


def _emit(progress: Progress, **event: Any) -> None:
    if progress is not None:
        progress(event)


def base_key(recipe: Recipe) -> str:
    """What the base models depend on; a folder holding another key is refused.

    Without a ``sweep`` section the seed is part of it (as it always was); with one it is
    not, so seeds can be added to a sweep later (each seed's models have their own folder)."""
    r = recipe.to_dict()
    keys = ("data", "model", "train") if recipe.sweep is not None else ("seed", "data", "model", "train")
    return stable_hash({k: r[k] for k in keys})


def referenced_variants(recipe: Recipe) -> Set[str]:
    """Variants whose models a check needs besides the one it evaluates (transfer surrogates,
    corruption baselines): string parameters of checks that name a variant."""
    names = {v.name for v in recipe.all_variants}
    out = set()
    for c in recipe.evaluate:
        for v in c.check.to_dict("check").values():
            if isinstance(v, str) and v in names:
                out.add(v)
    return out


def portable_recipe(recipe: Recipe) -> Any:
    """What a worker process gets: the mapping the recipe was parsed from (parsed again there,
    once per process) when that gives this recipe, else ``to_dict()`` when that does, else the
    Recipe itself (pickled; check parameter classes made at run time do not pickle)."""
    import dataclasses

    from .recipe import parse_recipe

    for cand in (recipe.source, recipe.to_dict()):
        if cand is None:
            continue
        try:
            if dataclasses.replace(parse_recipe(cand), device=recipe.device) == recipe:
                return cand
        except Exception:  # noqa: BLE001 - not a faithful copy: try the next form
            continue
    return recipe


def needs_work(recipe: Recipe, spec: VariantSpec, old: Optional[Dict[str, Any]], have_model: bool) -> str:
    """``skip``, ``evaluate`` (model kept, some checks missing) or ``build``."""
    from .cell import new_record

    key = new_record(spec)["spec_key"]
    if not old or old.get("spec_key") != key or old.get("status") not in ("ok", "failed", "built"):
        return "build"
    if old.get("status") == "failed" and "metrics" not in old:
        return "build"
    done = old.get("metrics", {})
    missing = [c for c in recipe.evaluate
               if c.id not in done or "error" in done[c.id] or done[c.id].get("check_key") != check_key(c)]
    if old.get("status") == "built" or missing:
        return "evaluate" if have_model else "build"
    return "skip"


class Runner:
    """Runs one recipe into one folder; see the module docstring.

    Args:
        recipe: the validated recipe.
        out_dir: the run folder.
        progress: receives progress events (dicts with an ``event`` key).
        fresh: discard earlier results in the folder.
        executor: where cells run (default: in this process).
    """

    def __init__(self, recipe: Recipe, out_dir, progress: Progress = None, fresh: bool = False,
                 executor: Optional[Executor] = None) -> None:
        self.recipe = recipe
        self.dir = Path(out_dir)
        self.progress = progress
        self.fresh = fresh
        self.executor = executor
        self.device = resolve_device(recipe.device)
        self.multi_seed = len(recipe.seeds) > 1
        self.specs = {v.name: v for v in recipe.all_variants}
        self.order = [v.name for v in recipe.all_variants]
        self.store: Optional[ResultsStore] = None
        self.data = None
        self.base: Optional[nn.Module] = None
        #: cells run in this call (not skipped), for tests and benchmarks
        self.ran: List[str] = []

    # -- paths ------------------------------------------------------------------------------
    def _seed_dir(self, seed: int) -> Path:
        return self.dir / "seeds" / str(seed) if self.recipe.sweep is not None else self.dir

    @staticmethod
    def _or_legacy(path: Path) -> Path:
        """``path``, or its ``.pt`` twin written by an older sturdynet when only that exists."""
        old = path.with_suffix(".pt")
        return old if not path.exists() and old.exists() else path

    def base_path(self, seed: int) -> Path:
        return self._or_legacy(self._seed_dir(seed) / f"base{SUFFIX}")

    def variant_path(self, name: str, seed: int) -> Path:
        """The variant's checkpoint (the name is checked again: results.json may have been edited)."""
        return self._or_legacy(self._seed_dir(seed) / "variants" / f"{safe_name(name, 'variant name')}{SUFFIX}")

    def _verified(self, path: Path, record: Optional[Dict[str, Any]], what: str) -> bool:
        """Whether ``path`` exists and holds the checkpoint ``record`` names (its SHA-256); a file
        that fails is reported and left to be rebuilt."""
        if not path.exists():
            return False
        why = verify_checkpoint(path, (record or {}).get("sha256"))
        if why is not None:
            log.warning("%s: %s; rebuilding it", what, why)
            _emit(self.progress, event="warning", text=f"{what}: checkpoint failed verification, rebuilding")
            return False
        return True

    def _model_blob(self, name: str, seed: int) -> Optional[bytes]:
        p = self.variant_path(name, seed)
        return p.read_bytes() if p.exists() else None

    def _has_model(self, name: str, seed: int, record: Optional[Dict[str, Any]] = None) -> bool:
        spec = self.specs[name]
        if not spec.steps and spec.finetune is None:
            return True
        if record is None and self.store is not None:
            record = self.store.cell(name, seed)
        return self._verified(self.variant_path(name, seed), record,
                              f"variant {name}" + (f" (seed {seed})" if self.multi_seed else ""))

    # -- driver ---------------------------------------------------------------------------
    def _label(self, c: Cell) -> str:
        return f"{c.variant} (seed {c.seed})" if self.multi_seed else c.variant

    def _header(self) -> Dict[str, Any]:
        from ..data import load_data

        r = self.recipe
        self.data = load_data(r.data, r.seeds[0])
        threads = torch.get_num_threads()
        return {"name": r.name, "recipe": r.to_dict(), "seed": r.seeds[0], "versions": versions(),
                "git_commit": git_commit(), "machine": machine(str(self.device), threads),
                "data": self.data.describe(),
                **({"sweep": {"seeds": list(r.seeds), "cells": len(r.cells()), "variant_names": self.order}}
                   if r.sweep is not None else {})}

    def _task(self, seed: int, **kw: Any) -> Dict[str, Any]:
        return {"recipe": self._portable, "seed": seed, "threads": torch.get_num_threads(),
                "device": str(self.device), "show_seed": self.multi_seed, **kw}

    def run(self) -> Dict[str, Any]:
        """Run (or resume) every cell; returns the results.json dict."""
        r = self.recipe
        _emit(self.progress, event="stage", stage="load data")
        self.store = ResultsStore(self.dir, fresh=self.fresh)
        own_executor = self.executor is None
        ex = self.executor or make_executor("inprocess", progress=self.progress)
        self._portable = self.recipe if isinstance(ex, InProcess) else portable_recipe(self.recipe)
        try:
            if self.fresh:
                for ext in (".pt", SUFFIX):
                    for p in [*self.dir.glob(f"base{ext}"), *self.dir.glob(f"variants/*{ext}"),
                              *self.dir.glob(f"seeds/*/*{ext}"), *self.dir.glob(f"seeds/*/variants/*{ext}")]:
                        p.unlink(missing_ok=True)
            env = environment(str(self.device), torch.get_num_threads())
            for w in self.store.start(self._header(), base_key(r), env):
                log.warning("%s", w)
                _emit(self.progress, event="warning", text=w)
            self.store.write_view(self.order, r.seeds)
            self._schedule(ex)
            self._load_first_base()
            return self.store.write_view(self.order, r.seeds)
        finally:
            if own_executor:
                ex.shutdown()
            self.store.close()

    def _load_first_base(self) -> None:
        p = self.base_path(self.recipe.seeds[0])
        if p.exists():
            self.base = load_checkpoint(p, self.device, trusted_factory=getattr(self.recipe.model, "factory", None))[0]

    def _schedule(self, ex: Executor) -> None:
        r, store = self.recipe, self.store
        assert store is not None
        refs = {n for n in referenced_variants(r) if self.specs[n].steps or self.specs[n].finetune is not None}
        bases: Dict[int, Any] = {}
        base_failed: Dict[int, str] = {}
        running: Dict[Any, Tuple[str, Any, int]] = {}
        attempts: Dict[Tuple[str, int], int] = {}
        errors: Dict[Tuple[str, int], List[str]] = {}
        for s in r.seeds:
            rec = store.base(s)
            if rec and rec.get("status") == "ok" and \
                    self._verified(self.base_path(s), rec, "base model" + (f" (seed {s})" if self.multi_seed else "")):
                _emit(self.progress, event="stage", stage="load base model" + (f" (seed {s})" if self.multi_seed else ""))
                bases[s] = ex.put(self.base_path(s).read_bytes())
            else:
                running[ex.submit("base", self._task(s))] = ("base", s, 1)
        cells = r.cells()
        builds = [Cell(s, n) for s in r.seeds for n in sorted(refs)]
        waiting_builds = {(c.variant, c.seed) for c in builds}
        waiting = list(cells)
        dep_blobs: Dict[Tuple[str, int], Any] = {}  # referenced variants' checkpoints, put once

        def submit_cell(c: Cell, build_only: bool) -> bool:
            old = store.cell(c.variant, c.seed)
            have = self._has_model(c.variant, c.seed)
            todo = needs_work(r, self.specs[c.variant], old, have)
            if build_only:
                if todo != "build":
                    return False
                todo = "build-only"
            if todo == "skip":
                _emit(self.progress, event="skip", variant=self._label(c))
                return False
            deps = {}
            for n in refs - {c.variant}:
                if (n, c.seed) not in dep_blobs and self.variant_path(n, c.seed).exists():
                    dep_blobs[(n, c.seed)] = ex.put(self.variant_path(n, c.seed).read_bytes())
                if (n, c.seed) in dep_blobs:
                    deps[n] = dep_blobs[(n, c.seed)]
            model = self._model_blob(c.variant, c.seed) if todo == "evaluate" else None
            task = self._task(c.seed, variant=c.variant, todo=todo, base=bases[c.seed], deps=deps, old=old,
                              model=model)
            key = (c.variant, c.seed)
            attempts[key] = attempts.get(key, 0) + 1
            running[ex.submit("cell", task)] = ("build" if build_only else "cell", c, attempts[key])
            return True

        def pump() -> None:
            for c in [c for c in builds if (c.variant, c.seed) in waiting_builds and c.seed in bases]:
                waiting_builds.discard((c.variant, c.seed))
                submit_cell(c, build_only=True)
            for c in list(waiting):
                if c.seed in base_failed:
                    waiting.remove(c)
                    self._commit_failure(c, f"base model failed: {base_failed[c.seed]}", attempts, errors)
                elif c.seed in bases and not any(k[1] == c.seed for k in waiting_builds) and \
                        not any(kind == "build" and cc.seed == c.seed for kind, cc, _ in running.values()):
                    waiting.remove(c)
                    submit_cell(c, build_only=False)

        pump()
        while running:
            done, _ = ex.wait(list(running))
            for h in done:
                kind, what, attempt = running.pop(h)
                try:
                    out = ex.result(h)
                except Exception as e:  # noqa: BLE001 - a worker crash is a failed task
                    out = {"record": {"status": "failed", "error": error_text(e)}, "checkpoint": None, "crash": True}
                if kind == "base":
                    self._finish_base(what, out, bases, base_failed, ex, attempt, running)
                else:
                    self._finish_cell(kind, what, out, attempt, attempts, errors, submit_cell)
            pump()

    def _finish_base(self, seed, out, bases, base_failed, ex, attempt, running) -> None:
        rec = out["record"]
        if rec.get("status") == "ok" and out.get("checkpoint"):
            path = self._seed_dir(seed) / f"base{SUFFIX}"
            write_bytes_atomic(path, out["checkpoint"])
            path.with_suffix(".pt").unlink(missing_ok=True)  # an older checkpoint of the same model
            rec = {**rec, "checkpoint": path.relative_to(self.dir).as_posix(),
                   "sha256": checkpoint_sha256(out["checkpoint"])}
            rec.pop("seed", None)
            for w in rec.pop("warnings", None) or []:
                log.warning("%s", w)
                self.store.add_warning(w)
            self.store.put_base(seed, rec)
            self.store.write_view(self.order, self.recipe.seeds)
            bases[seed] = ex.put(out["checkpoint"])
        elif attempt <= self.recipe.retries:
            log.warning("base model (seed %s) failed, retrying: %s", seed, rec.get("error"))
            running[ex.submit("base", self._task(seed))] = ("base", seed, attempt + 1)
        else:
            base_failed[seed] = rec.get("error") or "unknown error"
            self.store.put_base(seed, {"status": "failed", "error": base_failed[seed]})

    def _finish_cell(self, kind, c: Cell, out, attempt, attempts, errors, submit_cell) -> None:
        rec = out["record"]
        key = (c.variant, c.seed)
        if out.get("crash"):
            from .cell import new_record

            rec = {**new_record(self.specs[c.variant]), "seed": c.seed, **rec}
        if out.get("checkpoint"):
            path = self._seed_dir(c.seed) / "variants" / f"{safe_name(c.variant, 'variant name')}{SUFFIX}"
            write_bytes_atomic(path, out["checkpoint"])
            path.with_suffix(".pt").unlink(missing_ok=True)  # an older checkpoint of the same variant
            rec["checkpoint"] = path.relative_to(self.dir).as_posix()
            rec["sha256"] = checkpoint_sha256(out["checkpoint"])
        if rec.get("status") == "failed":
            errors.setdefault(key, []).append(rec.get("error") or "unknown error")
        rec["attempts"] = attempt
        if errors.get(key):
            rec["errors"] = list(errors[key])
        rec["env"] = getattr(self.store, "env_id", None)
        self.store.put_cell(c.variant, c.seed, rec)
        if kind == "cell":
            self.ran.append(c.id)
            self.store.write_view(self.order, self.recipe.seeds)
            _emit(self.progress, event="variant", variant=self._label(c), status=rec["status"])
        if rec.get("status") == "failed" and attempt <= self.recipe.retries:
            log.warning("cell %s failed (attempt %d), retrying: %s", c.id, attempt, rec.get("error"))
            submit_cell(c, build_only=kind == "build")

    def _commit_failure(self, c: Cell, error: str, attempts, errors) -> None:
        from .cell import new_record

        rec = {**new_record(self.specs[c.variant]), "seed": c.seed, "status": "failed", "error": error,
               "attempts": attempts.get((c.variant, c.seed), 0)}
        self.store.put_cell(c.variant, c.seed, rec)
        self.store.write_view(self.order, self.recipe.seeds)
        _emit(self.progress, event="variant", variant=self._label(c), status="failed")


def run_recipe(recipe: Recipe, out_dir, progress: Progress = None, fresh: bool = False,
               executor: Optional[Executor] = None) -> Dict[str, Any]:
    """Run ``recipe`` into ``out_dir`` (resuming what is there) and return the results."""
    return Runner(recipe, out_dir, progress, fresh, executor).run()


def plan(recipe: Recipe, out_dir) -> List[Tuple[Cell, str]]:
    """What ``run`` would do for each cell, from results.json without locking: ``build``,
    ``evaluate`` (some checks missing) or ``skip`` (done)."""
    import json

    path = Path(out_dir) / "results.json"
    old: Dict[Tuple[str, int], Dict[str, Any]] = {}
    if path.exists():
        try:
            res = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            res = {}
        res = res if isinstance(res, dict) else {}
        for v in res.get("cells") or [{**v, "seed": res.get("seed", 0)} for v in res.get("variants") or []]:
            old[(v.get("name"), v.get("seed"))] = v
    runner = Runner(recipe, out_dir)
    out = []
    for c in recipe.cells():
        todo = needs_work(recipe, runner.specs[c.variant], old.get((c.variant, c.seed)),
                          runner._has_model(c.variant, c.seed, old.get((c.variant, c.seed))))
        out.append((c, todo))
    return out
