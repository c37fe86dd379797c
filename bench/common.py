"""Shared by the benchmark scripts: the CIFAR-10 archive path and JSON-lines logging."""
from __future__ import annotations

import json
from pathlib import Path

CIFAR = str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz")


def log(path: Path, row: dict) -> None:
    """Append ``row`` to a JSON-lines file and echo it."""
    with Path(path).open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
