"""Where cells run: in the driver process, in a local process pool, or on Ray.

All three run the same functions (:mod:`sturdynet.run.cell`) on the same task dicts and
hand the results back to the driver, the only writer of the run folder.

* ``inprocess`` (default): one after another in the driver; progress events reach the CLI.
* ``pool``: ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` processes
  (``spawn``: a clean interpreter per worker, safe with torch's threads).
* ``ray``: Ray tasks (one CPU each). ``address`` joins an existing cluster; otherwise
  ``ray.init(num_cpus=workers)`` starts a local instance. Checkpoint bytes go into Ray's
  object store once (:meth:`Executor.put`) and every cell of that seed refers to them.
  Ray is an optional extra: ``pip install -e ".[ray]"``.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import cell as _cell

Progress = Optional[Callable[[dict], None]]
EXECUTORS = ("inprocess", "pool", "ray")


def _call(kind: str, task: Dict[str, Any], *blobs: bytes) -> Dict[str, Any]:
    """Run a task in a worker; ``blobs`` are the values of ``task["_blobs"]`` keys (Ray passes
    object-store values as top-level arguments, which it resolves before the call)."""
    if blobs:
        task = dict(task)
        for (key, sub), b in zip(task.pop("_blobs"), blobs):
            if sub is None:
                task[key] = b
            else:
                task[key] = {**task[key], sub: b}
    fn = _cell.train_base if kind == "base" else _cell.run_cell
    return fn(task)


class Executor:
    """Common interface: ``submit`` a task, ``wait`` for some to finish, ``result`` of one."""

    name = "inprocess"
    workers = 1

    def put(self, blob: bytes) -> Any:
        """Make bytes available to tasks (Ray: the object store); returns what tasks receive."""
        return blob

    def submit(self, kind: str, task: Dict[str, Any]) -> Any:
        raise NotImplementedError

    def wait(self, handles: Sequence[Any]) -> Tuple[List[Any], List[Any]]:
        """Block until at least one handle is done; returns (done, not done)."""
        raise NotImplementedError

    def result(self, handle: Any) -> Dict[str, Any]:
        """The task's result; raises the task's exception (or a worker crash)."""
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


class InProcess(Executor):
    """Runs tasks one at a time in the driver, in submission order (today's sequential behaviour):
    ``wait`` runs the oldest submitted task, so the driver stores each result before the next runs."""

    def __init__(self, progress: Progress = None) -> None:
        self.progress = progress

    def submit(self, kind: str, task: Dict[str, Any]) -> Any:
        fut: cf.Future = cf.Future()
        fut.thunk = (kind, task)  # type: ignore[attr-defined]
        return fut

    def wait(self, handles):
        h = handles[0]
        if not h.done():
            kind, task = h.thunk
            fn = _cell.train_base if kind == "base" else _cell.run_cell
            try:
                h.set_result(fn(task, self.progress))
            except Exception as e:  # noqa: BLE001 - reported through result()
                h.set_exception(e)
        return [h], list(handles[1:])

    def result(self, handle):
        return handle.result()


class Pool(Executor):
    """A local pool of ``workers`` processes."""

    name = "pool"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        ctx = multiprocessing.get_context("spawn")
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

    def submit(self, kind, task):
        try:
            return self.pool.submit(_call, kind, task)
        except cf.process.BrokenProcessPool:  # a worker died: start a new pool for the retries
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self.pool.submit(_call, kind, task)

    def wait(self, handles):
        done, rest = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done], [h for h in handles if h in rest]

    def result(self, handle):
        return handle.result()

    def shutdown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def ray_available() -> Optional[str]:
    """None when Ray imports, else why not (one line)."""
    try:
        import ray  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import problem
        return f"ray is not installed ({type(e).__name__}: {e}); pip install -e \".[ray]\""
    return None


class Ray(Executor):
    """Ray tasks; see the module docstring."""

    name = "ray"

    def __init__(self, workers: Optional[int], address: Optional[str] = None) -> None:
        why = ray_available()
        if why:
            raise ValueError(f"--executor ray: {why}")
        import ray

        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            env = {"env_vars": {k: os.environ[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
                                if k in os.environ}}
            if address:
                ray.init(address=address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, runtime_env=env,
                         log_to_driver=False, configure_logging=False)
            self.started = True
        self.workers = int(ray.cluster_resources().get("CPU", workers or 1))
        self._fn = ray.remote(num_cpus=1, max_retries=0)(_call)

    def put(self, blob):
        return self.ray.put(blob)

    def submit(self, kind, task):
        # Ray resolves ObjectRefs passed as top-level arguments, not ones nested in a dict
        keys, refs, task = [], [], dict(task)
        for k, v in list(task.items()):
            if isinstance(v, self.ray.ObjectRef):
                keys.append((k, None))
                refs.append(v)
                task[k] = None
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, self.ray.ObjectRef):
                        keys.append((k, k2))
                        refs.append(v2)
        if keys:
            task["_blobs"] = keys
        return self._fn.remote(kind, task, *refs)

    def wait(self, handles):
        done, rest = self.ray.wait(list(handles), num_returns=1)
        return done, rest

    def result(self, handle):
        return self.ray.get(handle)

    def shutdown(self):
        if self.started:
            self.ray.shutdown()


def make_executor(name: str = "inprocess", workers: Optional[int] = None, address: Optional[str] = None,
                  progress: Progress = None) -> Executor:
    """An executor by name (``inprocess``, ``pool``, ``ray``).

    Raises:
        ValueError: unknown name, bad worker count, or Ray missing.
    """
    if name not in EXECUTORS:
        raise ValueError(f"--executor: unknown executor {name!r} (use {', '.join(EXECUTORS)})")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {workers}")
    if name == "ray":
        return Ray(workers, address)
    if address:
        raise ValueError("--address: only with --executor ray")
    if name == "pool" or (workers or 1) > 1:
        return Pool(workers or 2)
    return InProcess(progress)
