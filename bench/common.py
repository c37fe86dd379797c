"""Shared by the benchmark scripts: the CIFAR-10 subset loader, the digits attack model, JSON-lines
logging, step timing."""
from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import torch.nn.functional as F
from torch import nn

CIFAR = str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz")


def single_thread_run(out: str) -> Tuple[Path, str]:
    """One torch thread; the output file's folder created; returns (output path, machine line)."""
    import platform

    import torch

    torch.set_num_threads(1)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, f"{platform.node()} CPU, 1 thread"


def log(path: Path, row: dict) -> None:
    """Append ``row`` to a JSON-lines file and echo it."""
    with Path(path).open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def digits_mlp(seed: Optional[int] = None) -> Tuple[Any, Any, Any, Any]:
    """The attack benchmarks' model: an ``mlp`` trained 10 epochs (lr 0.05) on digits, in eval
    mode, with the test images, labels and clean-correct mask. ``seed`` seeds the initial
    weights (None: the global generator as it is)."""
    import torch

    from sturdynet.data.digits import DigitsParams, load_digits
    from sturdynet.models import build_model
    from sturdynet.train.config import TrainConfig
    from sturdynet.train.loop import fit

    if seed is not None:
        torch.manual_seed(seed)
    data = load_digits(DigitsParams(), seed=0)
    model = build_model("mlp", 1, 10, (8, 8), data.mean, data.std)
    fit(model, data, TrainConfig(epochs=10, lr=0.05), seed=0)
    model.eval()
    x, y = data.test.x, data.test.y
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    return model, x, y, clean


def robust_pct(model: nn.Module, adv: Any, y: Any, clean: Any) -> float:
    """Robust accuracy in %: clean-correct and still correct on ``adv``."""
    import torch

    with torch.no_grad():
        return 100 * float(((model(adv).argmax(1) == y) & clean).float().mean())


def cifar_data(subset: Mapping[str, Optional[int]], seed: int = 0, path: Optional[str] = None,
               **fields: Any) -> Tuple[Any, Any]:
    """A stratified subset of the CIFAR-10 JPEG archive with crop+flip augmentation.

    Args:
        subset: split sizes, e.g. ``{"train": 10000, "val": 500, "test": 2000}`` (a split
            left out keeps its full size).
        seed: data seed (split and subset draw).
        path: archive or folder (default :data:`CIFAR`).
        fields: other ``imagefolder`` fields, e.g. ``val_fraction=0.02``.

    Returns:
        ``(data bundle, data component)``; the component goes into checkpoints' ``arch``.
    """
    from sturdynet.core.params import Component, from_dict
    from sturdynet.data import load_data
    from sturdynet.core.registry import DATASETS

    spec = {"path": path or CIFAR, "augment": "crop_flip", "subset": dict(subset), **fields}
    component = Component("imagefolder", from_dict(DATASETS.params("imagefolder"), spec, "data"))
    return load_data(component, seed), component


def step_time(model: nn.Module, data: Any, steps: int, warmup: int) -> float:
    """Median seconds of one SGD training step (lr 0.001) on a fixed batch of 128, after
    ``warmup`` untimed steps, on a copy of ``model``."""
    from sturdynet.train.config import TrainConfig
    from sturdynet.train.loop import make_optimizer

    model = copy.deepcopy(model).train()
    opt = make_optimizer(model, TrainConfig(lr=0.001))
    x, y = data.train.x[:128], data.train.y[:128]
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
