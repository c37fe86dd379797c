"""Progress display for the CLI: stage, epoch or batch bar and time left (rich), or plain lines.

Events (dicts with an ``event`` key) come from the runner, the training loop and, through
:mod:`sturdynet.core.progress`, from inside long checks (``batch`` events carry the
``fraction`` of the check done, so attacks, the bit-flip search and certification show
how far they are and how long is left instead of sitting at ``0/1``).
"""
from __future__ import annotations

import sys
import time
from typing import Optional

#: seconds between two plain-text progress lines of one stage
PLAIN_EVERY = 10.0


def fmt_left(seconds: Optional[float]) -> str:
    """``"42 s left"``, ``"3 min 5 s left"``, ``"1 h 02 min left"``; empty when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s left"
    if s < 3600:
        return f"{s // 60} min {s % 60} s left"
    return f"{s // 3600} h {s % 3600 // 60:02d} min left"


def time_left(elapsed: float, fraction: float) -> Optional[float]:
    """Linear estimate of the time left after ``elapsed`` seconds at ``fraction`` done."""
    if fraction <= 0 or elapsed <= 0:
        return None
    return elapsed * (1 - min(1.0, fraction)) / fraction


class ProgressDisplay:
    """Receives runner/trainer/check events; draws a live bar on a terminal, lines otherwise."""

    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and self.stream.isatty()
        self._progress = None
        self._task = None
        self._stage = ""
        self._t0 = time.perf_counter()
        self._stage_t0 = self._t0
        self._last_line = -PLAIN_EVERY
        self._depth = 0
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                      TextColumn("{task.fields[count]}"), TextColumn("{task.fields[info]}"),
                                      TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                                      console=Console(file=self.stream), transient=False)

    def __enter__(self) -> "ProgressDisplay":
        if self._progress is not None and self._depth == 0:
            self._progress.start()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._progress is not None and self._depth == 0:
            self._progress.stop()

    def _line(self, text: str) -> None:
        print(f"[{time.perf_counter() - self._t0:7.1f}s] {text}", file=self.stream, flush=True)

    def _update(self, **kw) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, **kw)

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        kind = event.get("event")
        now = time.perf_counter()
        if kind == "stage":
            self._stage = event["stage"]
            self._stage_t0 = now
            self._last_line = now
            total: Optional[int] = event.get("epochs")
            if self._progress is not None:
                if self._task is not None:
                    self._progress.update(self._task, visible=False)
                self._task = self._progress.add_task(self._stage, total=total or 1, info="", left="",
                                                     count=f"0/{total}" if total else "")
            else:
                self._line(self._stage + (f" ({total} epochs)" if total else ""))
        elif kind == "epoch":
            info = " ".join(f"{k}={event[k]:.3f}" for k in ("train_loss", "val_accuracy") if k in event)
            left = fmt_left(time_left(now - self._stage_t0, event["epoch"] / max(1, event["epochs"])))
            if self._progress is not None and self._task is not None:
                self._update(completed=event["epoch"], total=event["epochs"], info=info, left=left,
                             count=f"{event['epoch']}/{event['epochs']}")
            else:
                self._line(f"{self._stage}: epoch {event['epoch']}/{event['epochs']} {info}"
                           + (f" ({left})" if left and event["epoch"] < event["epochs"] else ""))
        elif kind == "batch":
            frac = float(event.get("fraction", 0.0))
            left = fmt_left(time_left(now - self._stage_t0, frac))
            if self._progress is not None:
                self._update(completed=frac, total=1.0, count=f"{100 * frac:3.0f}%", left=left)
            elif now - self._last_line >= PLAIN_EVERY and frac < 1:
                self._last_line = now
                self._line(f"{self._stage}: {100 * frac:.0f}%" + (f" ({left})" if left else ""))
        elif kind == "warning":
            self._line(f"warning: {event['text']}") if self._progress is None else \
                self._progress.console.print(f"[yellow]warning: {event['text']}[/yellow]")
        elif kind == "variant":
            if self._progress is not None and self._task is not None and self._progress.tasks:
                self._progress.update(self._task, completed=self._progress.tasks[-1].total, left="")
            if self._progress is None:
                self._line(f"variant {event['variant']}: {event['status']}")
            elif self._task is None:  # cells finishing on pool / Ray workers
                self._progress.console.print(f"variant {event['variant']}: {event['status']}")
        elif kind == "skip":
            self._line(f"variant {event['variant']}: already done, skipped") if self._progress is None else \
                self._progress.console.print(f"variant {event['variant']}: already done, skipped")
