"""Progress display for the CLI: stage, epoch bar and time left (rich), or plain lines."""
from __future__ import annotations

import sys
import time
from typing import Optional


class ProgressDisplay:
    """Receives runner/trainer events; draws a live bar on a terminal, lines otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        self._progress = None
        self._task = None
        self._stage = ""
        self._t0 = time.perf_counter()
        if self.live:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                      TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True),
                                      transient=False)

    def __enter__(self) -> "ProgressDisplay":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _line(self, text: str) -> None:
        print(f"[{time.perf_counter() - self._t0:7.1f}s] {text}", file=sys.stderr, flush=True)

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        kind = event.get("event")
        if kind == "stage":
            self._stage = event["stage"]
            total: Optional[int] = event.get("epochs")
            if self._progress is not None:
                if self._task is not None:
                    self._progress.update(self._task, visible=False)
                self._task = self._progress.add_task(self._stage, total=total or 1, info="")
                if not total:
                    self._progress.update(self._task, completed=0)
            else:
                self._line(self._stage + (f" ({total} epochs)" if total else ""))
        elif kind == "epoch":
            info = " ".join(f"{k}={event[k]:.3f}" for k in ("train_loss", "val_accuracy") if k in event)
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, completed=event["epoch"], total=event["epochs"], info=info)
            else:
                self._line(f"{self._stage}: epoch {event['epoch']}/{event['epochs']} {info}")
        elif kind == "variant":
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, completed=self._progress.tasks[-1].total)
            if self._progress is None:
                self._line(f"variant {event['variant']}: {event['status']}")
        elif kind == "skip":
            self._line(f"variant {event['variant']}: already done, skipped") if self._progress is None else \
                self._progress.console.print(f"variant {event['variant']}: already done, skipped")
