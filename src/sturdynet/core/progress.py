"""Fine-grained progress of long computations (attacks, bit-flip search, certification).

A caller that has a progress callback (the check context's ``progress``) opens
:func:`reporting`; code deep inside (an attack's batch loop) calls :func:`tick` with how
far *it* is, and loops in between (eps values, ensemble members, trials) narrow the
range with :func:`part`, so the callback receives the fraction of the whole job::

    with reporting(ctx.progress, "robust"):          # the check
        for i, eps in enumerate(eps_values):
            with part(i, len(eps_values)):           # this eps is the i-th of n equal parts
                attack(x, y)                         # calls tick(done, total) per batch

The callback gets ``{"event": "batch", "what": label, "fraction": f, "done": done,
"total": total}`` at most every ``interval`` seconds (and always at the end). Without
:func:`reporting`, :func:`tick` and :func:`part` cost almost nothing.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

Callback = Callable[[dict], None]


@dataclass
class _Job:
    callback: Callback
    label: str
    interval: float
    lo: float = 0.0
    hi: float = 1.0
    last: float = -1.0
    best: float = 0.0


_JOB: contextvars.ContextVar[Optional[_Job]] = contextvars.ContextVar("sturdynet_progress", default=None)


@contextlib.contextmanager
def reporting(callback: Optional[Callback], label: str = "", interval: float = 0.5) -> Iterator[None]:
    """Send :func:`tick` events inside the block to ``callback`` (no-op when it is None)."""
    if callback is None:
        yield
        return
    token = _JOB.set(_Job(callback, label, interval))
    try:
        yield
    finally:
        _JOB.reset(token)


@contextlib.contextmanager
def span(start: float, stop: float) -> Iterator[None]:
    """Inside the block, ticks cover the fractions ``[start, stop]`` of the current range."""
    job = _JOB.get()
    if job is None:
        yield
        return
    lo, hi = job.lo, job.hi
    job.lo, job.hi = lo + (hi - lo) * start, lo + (hi - lo) * stop
    try:
        yield
    finally:
        job.lo, job.hi = lo, hi


def part(index: int, count: int):
    """Inside the block, ticks cover the ``index``-th of ``count`` equal parts of the current range."""
    return span(index / max(1, count), (index + 1) / max(1, count))


def active() -> bool:
    """Is a progress callback listening (cheap; lets callers skip extra work)?"""
    return _JOB.get() is not None


def tick(done: float, total: float) -> None:
    """Report ``done`` of ``total`` units of the current range (e.g. samples of one attack call)."""
    job = _JOB.get()
    if job is None or total <= 0:
        return
    frac = job.lo + (job.hi - job.lo) * min(1.0, max(0.0, done / total))
    frac = max(frac, job.best)  # never step back (a later part may be cut short)
    job.best = frac
    now = time.perf_counter()
    if now - job.last < job.interval and done < total:
        return
    job.last = now
    job.callback({"event": "batch", "what": job.label, "fraction": frac, "done": done, "total": total})
