"""Checkpoints: weights plus everything needed to rebuild the model, loaded as data only.

A checkpoint is a plain dict of strings, numbers, lists and tensors, so
``torch.load(path, weights_only=True)`` reads it without running any code. The model
is rebuilt from the registered model name and its parameters, the data facts
(channels, classes, input size, normalization) and the compression steps (their
``prepare`` builds the structure: quantizers, masks), then the state_dict is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..core.atomic import torch_save_atomic
from ..core.params import ConfigError
from ..models.arch import arch_of, build_from_arch

__all__ = ["FORMAT", "arch_of", "build_from_arch", "load_checkpoint", "save_checkpoint"]

FORMAT = "sturdynet-checkpoint"


def save_checkpoint(path: Union[str, Path], model: nn.Module, arch: Dict[str, Any],
                    extra: Optional[Dict[str, Any]] = None) -> None:
    """Write atomically: a half-written checkpoint never replaces a good one."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "version": 1, "arch": arch, "state_dict": state, "extra": dict(extra or {})}
    torch_save_atomic(path, blob)


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu",
                    trusted_factory: Optional[str] = "") -> Tuple[nn.Module, Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns (model in eval mode on
    ``map_location``, blob). A model built by a factory is rebuilt only when the caller
    names that factory in ``trusted_factory`` (loading a file never imports code by itself).

    Raises:
        ValueError: one line naming the file when it is missing, not a sturdynet
            checkpoint, or does not match its architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sturdynet checkpoint")
    try:
        model = build_from_arch(blob["arch"], blob["state_dict"], trusted_factory=trusted_factory)
    except (ConfigError, KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: cannot rebuild its model ({str(e).splitlines()[0][:300]})") from None
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except (KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: does not match its architecture ({str(e).splitlines()[0][:300]})") from None
    model.to(map_location).eval()
    return model, blob


def checkpoint_bytes(model: nn.Module, arch: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> bytes:
    """The bytes :func:`save_checkpoint` would write (sweep workers send these to the driver,
    the only writer of the run folder)."""
    import io

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": 1, "arch": arch, "state_dict": state, "extra": dict(extra or {})}, buf)
    return buf.getvalue()


def load_checkpoint_bytes(data: bytes, source: str = "checkpoint",
                          trusted_factory: Optional[str] = "") -> Tuple[nn.Module, Dict[str, Any]]:
    """Like :func:`load_checkpoint`, from bytes in memory (``weights_only=True``), on the CPU."""
    import io

    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad blob
        raise ValueError(f"{source}: not a loadable checkpoint ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{source}: not a sturdynet checkpoint")
    try:
        model = build_from_arch(blob["arch"], blob["state_dict"], trusted_factory=trusted_factory)
        model.load_state_dict(blob["state_dict"], strict=True)
    except (ConfigError, KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{source}: does not match its architecture ({str(e).splitlines()[0][:300]})") from None
    model.eval()
    return model, blob
