"""Checkpoints: weights plus everything needed to rebuild the model, loaded as data only.

A checkpoint is a safetensors file (:mod:`sturdynet.core.weights`): the state_dict as
tensors, and a JSON header with the architecture and ``extra`` facts (training
history, initial weights); its SHA-256 is stored in the file and verified on every
load. Nothing is unpickled. Checkpoints written by earlier versions with ``torch.save``
still load, with ``torch.load(path, weights_only=True)``.

The model is rebuilt from the registered model name and its parameters, the data facts
(channels, classes, input size, normalization) and the compression steps (their
``prepare`` builds the structure: quantizers, masks), then the state_dict is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..core.names import first_line
from ..core.weights import (load_legacy, looks_like_safetensors, parse_weights, save_weights, stored_sha256,
                            weights_bytes)
from ..models.arch import arch_of, build_from_arch

__all__ = ["FORMAT", "SUFFIX", "arch_of", "build_from_arch", "checkpoint_bytes", "checkpoint_sha256",
           "load_checkpoint", "load_checkpoint_bytes", "save_checkpoint", "verify_checkpoint"]

FORMAT = "sturdynet-checkpoint"
#: file suffix of checkpoints written by sturdynet (the format does not depend on it)
SUFFIX = ".safetensors"
_STATE = "state/"


def _header(arch: Dict[str, Any], extra: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return {"format": FORMAT, "version": 2, "arch": arch, "extra": dict(extra or {})}


def _state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {_STATE + k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: Union[str, Path], model: nn.Module, arch: Dict[str, Any],
                    extra: Optional[Dict[str, Any]] = None) -> str:
    """Write atomically: a half-written checkpoint never replaces a good one.

    Returns:
        The checkpoint's SHA-256 (also stored inside it): record it to verify the file later.
    """
    return save_weights(path, _header(arch, extra), _state(model))


def checkpoint_bytes(model: nn.Module, arch: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> bytes:
    """The bytes :func:`save_checkpoint` would write (sweep workers send these to the driver,
    the only writer of the run folder); :func:`checkpoint_sha256` reads their hash."""
    return weights_bytes(_header(arch, extra), _state(model))[0]


def checkpoint_sha256(data: bytes) -> Optional[str]:
    """The SHA-256 that checkpoint bytes declare (None for an old-format checkpoint)."""
    return stored_sha256(data) if looks_like_safetensors(data) else None


def _read(raw: bytes, where: str, expect_sha256: Optional[str]) -> Tuple[Dict[str, Any], Optional[str]]:
    """The checkpoint as ``{"format", "arch", "state_dict", "extra", ...}`` and its SHA-256."""
    if looks_like_safetensors(raw):
        header, tensors, digest = parse_weights(raw, where, expect_sha256, "checkpoint")
        if header.get("format") != FORMAT:
            raise ValueError(f"{where}: not a sturdynet checkpoint")
        state = {k[len(_STATE):]: v for k, v in tensors.items() if k.startswith(_STATE)}
        return {**header, "state_dict": state}, digest
    if expect_sha256 is not None:
        raise ValueError(f"{where}: checkpoint is not the one recorded (an old-format file where a "
                         "verified one was written)")
    blob = load_legacy(raw, "checkpoint", where)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{where}: not a sturdynet checkpoint")
    return blob, None


def _model(blob: Dict[str, Any], where: str, map_location: Any, trusted_factory: Optional[str]) -> nn.Module:
    state, arch = blob.get("state_dict"), blob.get("arch")
    if not isinstance(state, dict) or not isinstance(arch, dict) or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{where}: not a sturdynet checkpoint (no architecture or state_dict)")
    if not isinstance(blob.get("extra", {}), dict):
        raise ValueError(f"{where}: not a sturdynet checkpoint ('extra' is not a mapping)")
    blob.setdefault("extra", {})
    for k, v in state.items():
        if v.is_floating_point() and bool(torch.isnan(v).any()):
            raise ValueError(f"{where}: tensor {k} holds NaN values")
    try:
        model = build_from_arch(arch, state, trusted_factory=trusted_factory)
        model.load_state_dict(state, strict=True)
    except MemoryError:
        raise ValueError(f"{where}: its architecture is too large to build") from None
    except Exception as e:  # noqa: BLE001 - a structurally wrong file is a bad file, whatever breaks
        raise ValueError(f"{where}: does not match its architecture ({type(e).__name__}: "
                         f"{first_line(e, 300)})") from None
    return model.to(map_location).eval()


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu", trusted_factory: Optional[str] = "",
                    expect_sha256: Optional[str] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns (model in eval mode on
    ``map_location``, blob).

    Args:
        path: the checkpoint (safetensors, or an older ``torch.save`` file).
        map_location: device of the loaded model.
        trusted_factory: a model built by a factory is rebuilt only when the caller names
            that factory here (loading a file never imports code by itself).
        expect_sha256: the hash recorded when the checkpoint was written (results.json).

    Raises:
        ValueError: one line naming the file when it is missing, empty, damaged, fails its
            SHA-256 check, is not a sturdynet checkpoint, holds NaN weights, or does not
            match its architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    blob, digest = _read(path.read_bytes(), str(path), expect_sha256)
    blob["sha256"] = digest
    return _model(blob, str(path), map_location, trusted_factory), blob


def load_checkpoint_bytes(data: bytes, source: str = "checkpoint", trusted_factory: Optional[str] = "",
                          expect_sha256: Optional[str] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Like :func:`load_checkpoint`, from bytes in memory, on the CPU."""
    blob, digest = _read(data, source, expect_sha256)
    blob["sha256"] = digest
    return _model(blob, source, "cpu", trusted_factory), blob


def verify_checkpoint(path: Union[str, Path], expect_sha256: Optional[str]) -> Optional[str]:
    """None when ``path`` holds an intact checkpoint with the recorded hash (any checkpoint when
    ``expect_sha256`` is None), else the one-line reason. The model is not built."""
    try:
        raw = Path(path).read_bytes()
        if looks_like_safetensors(raw) or expect_sha256 is not None:
            _read(raw, str(path), expect_sha256)
    except (OSError, ValueError) as e:
        return first_line(e, 300)
    return None
