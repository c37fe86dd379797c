"""The run folder's results: a SQLite store (the source of truth) and results.json, a view of it.

``results.sqlite`` (WAL mode) holds the run header, one record per base model (by seed)
and one record per cell (variant, seed); every record is committed as soon as it is
known, so a driver killed at any moment loses at most the cells that were running.
``results.json`` is rewritten atomically from the store after every change: one record
per variant (seeds aggregated, with uncertainty: :mod:`sturdynet.run.uncertainty`), so
everything that reads results.json keeps working. All results.json writing happens here.

Only one process may write a run folder: the store takes an exclusive lock on
``<run>/.lock`` (``flock``; released by the OS when the process dies, so a killed run
never leaves a stale lock) and a second writer gets :class:`RunLocked` at once.
A folder written by an older sturdynet (results.json only) is imported on first open.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..core.atomic import write_json_atomic
from .uncertainty import aggregate_seeds, annotate_record

SCHEMA = 1
DB_FILE = "results.sqlite"
JSON_FILE = "results.json"
LOCK_FILE = ".lock"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object (key order independent)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def encode_bits(values: Iterable[int]) -> str:
    """Per-sample 0/1 outcomes as a compact string such as "0110"."""
    return "".join("1" if v else "0" for v in values)


def decode_bits(s: str) -> List[int]:
    return [1 if c == "1" else 0 for c in s]


def versions() -> Dict[str, Optional[str]]:
    """Versions of the libraries that shape the numbers."""
    import numpy
    import torch

    from .. import __version__

    out: Dict[str, Optional[str]] = {"sturdynet": __version__, "python": platform.python_version(),
                                     "torch": torch.__version__, "numpy": numpy.__version__}
    from importlib.metadata import PackageNotFoundError, version

    # installed versions read from package metadata: optional packages (torchvision, timm,
    # torch-pruning) are never imported just to be named
    for mod, dist in (("sklearn", "scikit-learn"), ("torchvision", "torchvision"), ("timm", "timm"),
                      ("torch_pruning", "torch-pruning")):
        try:
            out[mod] = version(dist)
        except PackageNotFoundError:
            out[mod] = None
    return out


def git_commit() -> Optional[str]:
    """The commit of the sturdynet source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine(device: str, threads: Optional[int] = None) -> Dict[str, Any]:
    import torch

    out = {"platform": platform.platform(), "processor": platform.machine(), "device": device,
           "threads": threads if threads is not None else torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        out.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), gpu_memory_bytes=torch.cuda.get_device_properties(dev).total_memory)
    return out


def environment(device: str, threads: int) -> Dict[str, Any]:
    """What must match for results to be comparable: thread count, device, library versions."""
    return {"threads": threads, "device": device, "versions": versions()}


class RunLocked(ValueError):
    """Another process is writing this run folder."""


def _write_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj)


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(self.fd)
                raise RunLocked(f"{path.parent} is being written by another sturdynet process (pid {holder}); "
                                f"wait for it to finish or use another --out") from None
        except ImportError:  # pragma: no cover - Windows: msvcrt's byte-range lock
            import msvcrt

            try:
                msvcrt.locking(self.fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                os.close(self.fd)
                raise RunLocked(f"{path.parent} is being written by another sturdynet process; "
                                f"wait for it to finish or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


class ResultsStore:
    """The results of one run folder; see the module docstring.

    Args:
        out_dir: the run folder (created if missing).
        lock: take the writer lock (False: read only, e.g. for ``--dry-run``).
        fresh: discard earlier results (after taking the lock).
    """

    def __init__(self, out_dir, lock: bool = True, fresh: bool = False) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / JSON_FILE
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _Lock(self.dir / LOCK_FILE) if lock else None
        if fresh and lock:
            for name in (JSON_FILE, DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm"):
                (self.dir / name).unlink(missing_ok=True)
        self.db = sqlite3.connect(str(self.dir / DB_FILE), isolation_level=None, timeout=30)
        if lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS bases (seed INTEGER PRIMARY KEY, record TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS cells (name TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT, "
                "record TEXT NOT NULL, updated TEXT, PRIMARY KEY (name, seed));")
            if self._meta("header") is None and self.path.exists():
                self._import_json()
        self.data: Dict[str, Any] = {}

    # -- low level ------------------------------------------------------------------
    def _meta(self, key: str) -> Any:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:  # no tables yet (read-only open of a new folder)
            return None
        return json.loads(row[0]) if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def _import_json(self) -> None:
        """Adopt a results.json written before the SQLite store existed."""
        try:
            old = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.path}: cannot read earlier results ({e}); remove it or use another --out") from None
        seed = old.get("seed") or 0
        with self.db:
            self.db.execute("BEGIN")
            header = {k: v for k, v in old.items() if k not in ("variants", "base", "base_key")}
            self._set_meta("header", header)
            self._set_meta("base_key", old.get("base_key"))
            if old.get("base"):
                self.db.execute("INSERT OR REPLACE INTO bases VALUES (?, ?)", (seed, json.dumps(old["base"])))
            for v in old.get("variants") or []:
                self.db.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?)",
                                (v["name"], seed, v.get("status"), json.dumps(v), now()))

    def close(self) -> None:
        """Close the database and release the writer lock."""
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- run --------------------------------------------------------------------------
    def start(self, header: Dict[str, Any], base_key: str, env: Optional[Dict[str, Any]] = None) -> List[str]:
        """Begin (or resume) a run; returns warnings (an environment that differs from the last one).

        Raises:
            ValueError: the folder holds results of a different recipe (``base_key`` differs).
        """
        old_key = self._meta("base_key")
        if old_key is not None and old_key != base_key:
            raise ValueError(f"{self.dir} holds results of a different recipe (data, model, training or seed "
                             f"differ); use another --out or --fresh")
        warnings: List[str] = []
        envs = self._meta("environments") or []
        if env is not None:
            if envs and envs[-1]["env"] != env:
                last = envs[-1]["env"]
                diff = [k for k in ("threads", "device") if last.get(k) != env.get(k)]
                diff += ["versions of " + ", ".join(k for k in env["versions"]
                                                   if last.get("versions", {}).get(k) != env["versions"][k])] \
                    if last.get("versions") != env.get("versions") else []
                warnings.append(f"{self.dir}: resuming with a different {', '.join(diff)} "
                                f"(was {_env_text(last)}, now {_env_text(env)}); both are recorded in results.json "
                                f"'environments' and each cell names the one it ran in")
            if not envs or envs[-1]["env"] != env:
                envs.append({"id": len(envs), "env": env, "first_used": now()})
        started = (self._meta("header") or {}).get("started", now())
        with self.db:
            self.db.execute("BEGIN")
            self._set_meta("header", {**header, "started": started})
            self._set_meta("base_key", base_key)
            self._set_meta("environments", envs)
        self.env_id = envs[-1]["id"] if envs else None
        return warnings

    def add_warning(self, text: str) -> None:
        """A run-level warning (shown by the report under ``warnings``), recorded once."""
        warnings = self._meta("warnings") or []
        if text not in warnings:
            self._set_meta("warnings", warnings + [text])

    def base(self, seed: int) -> Optional[Dict[str, Any]]:
        row = self.db.execute("SELECT record FROM bases WHERE seed=?", (seed,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_base(self, seed: int, record: Dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO bases VALUES (?, ?)", (seed, json.dumps(record)))

    def cell(self, name: str, seed: int) -> Optional[Dict[str, Any]]:
        row = self.db.execute("SELECT record FROM cells WHERE name=? AND seed=?", (name, seed)).fetchone()
        return json.loads(row[0]) if row else None

    def put_cell(self, name: str, seed: int, record: Dict[str, Any]) -> None:
        """Commit one cell's record (one transaction: it is either all there or not)."""
        self.db.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?)",
                        (name, seed, record.get("status"), json.dumps(record), now()))

    def cells(self) -> List[Dict[str, Any]]:
        rows = self.db.execute("SELECT record FROM cells ORDER BY seed, rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- the results.json view -------------------------------------------------------
    def view(self, order: Sequence[str], seeds: Sequence[int]) -> Dict[str, Any]:
        """The results.json dict: the header, one record per variant (in ``order``, then
        others found in the store), seeds aggregated, uncertainty added."""
        header = dict(self._meta("header") or {})
        by_name: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for name, seed, rec in self.db.execute("SELECT name, seed, record FROM cells ORDER BY rowid"):
            if seed in seeds:
                by_name.setdefault(name, {})[seed] = annotate_record(json.loads(rec))
        names = [n for n in order if n in by_name] + [n for n in by_name if n not in order]
        multi = len(seeds) > 1
        variants = [aggregate_seeds(by_name[n], list(seeds)) if multi else by_name[n][seeds[0]] for n in names]
        bases = {s: self.base(s) for s in seeds}
        out: Dict[str, Any] = {"schema": SCHEMA, **header, "base_key": self._meta("base_key"),
                               "base": bases.get(seeds[0]) or {}, "variants": variants,
                               "seeds": list(seeds), "environments": self._meta("environments") or [],
                               **({"warnings": self._meta("warnings")} if self._meta("warnings") else {}),
                               "updated": now()}
        if multi:
            out["bases"] = {str(s): b for s, b in bases.items() if b}
            out["cells"] = [{**by_name[n][s], "seed": s} for n in names for s in seeds if s in by_name[n]]
        return out

    def write_view(self, order: Sequence[str], seeds: Sequence[int]) -> Dict[str, Any]:
        """Rewrite results.json from the store (atomically) and return it."""
        self.data = self.view(order, seeds)
        _write_json(self.path, self.data)
        return self.data


def _env_text(env: Dict[str, Any]) -> str:
    return f"{env.get('threads')} threads on {env.get('device')}, torch {env.get('versions', {}).get('torch')}"
