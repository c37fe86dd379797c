"""The run folder's results.json: atomic writes, resume bookkeeping, environment facts."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from ..core.atomic import write_json_atomic

SCHEMA = 1


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
    for mod in ("sklearn", "torchvision"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
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


def machine(device: str) -> Dict[str, Any]:
    import torch

    out = {"platform": platform.platform(), "processor": platform.machine(), "device": device,
           "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        out.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), gpu_memory_bytes=torch.cuda.get_device_properties(dev).total_memory)
    return out


class ResultsStore:
    """results.json of one run folder, rewritten atomically after every change."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / "results.json"
        self.data: Dict[str, Any] = {}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{self.path}: cannot read earlier results ({e}); remove it or use another --out") from None

    def start(self, header: Dict[str, Any], base_key: str) -> None:
        """Begin (or resume) a run. Earlier results are kept only if ``base_key`` matches."""
        old = self.data
        if old and old.get("base_key") != base_key:
            raise ValueError(f"{self.dir} holds results of a different recipe (data, model, training or seed "
                             f"differ); use another --out or --fresh")
        self.data = {"schema": SCHEMA, **header, "base_key": base_key,
                     "base": old.get("base", {}), "variants": old.get("variants", []),
                     "started": old.get("started", now()), "updated": now()}
        self.save()

    def save(self) -> None:
        self.data["updated"] = now()
        write_json_atomic(self.path, self.data)

    def variant(self, name: str) -> Optional[Dict[str, Any]]:
        for v in self.data.get("variants", []):
            if v.get("name") == name:
                return v
        return None

    def put_variant(self, record: Dict[str, Any], order: List[str]) -> None:
        """Insert or replace a variant's record, keep recipe order, and save."""
        rest = [v for v in self.data.get("variants", []) if v.get("name") != record["name"]]
        rest.append(record)
        pos = {n: i for i, n in enumerate(order)}
        rest.sort(key=lambda v: pos.get(v.get("name"), len(pos)))
        self.data["variants"] = rest
        self.save()
