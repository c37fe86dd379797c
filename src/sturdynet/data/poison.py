"""BadNets training-set poisoning (Gu, Dolan-Gavitt & Garg, arXiv 1708.06733).

A fixed subset of ``round(rate * N)`` training samples is drawn once with a generator
seeded from the recipe seed; those samples get the trigger (:mod:`.trigger`) and an
attacker label:

* ``all_to_one`` -- every poisoned sample is relabelled ``target``. With ``source``
  only samples of that class are poisoned, which is the paper's single-target attack
  (digit i -> digit j); without it, samples of every class are, the all-to-one form
  later work uses.
* ``all_to_all`` -- label y becomes (y + 1) mod K, the paper's all-to-all attack.

``inject: add`` (default, as in the paper) appends the triggered copies to the training
set, which then holds N + round(rate * N) samples; ``inject: replace`` overwrites the
chosen samples instead (the other common convention; the set keeps N samples).

Poisoning is a data-set option (``data: {name: digits, poison: {...}}``): the poisoned
training split is then the one every training run of the recipe sees, base training
and every variant's fine-tuning alike. The validation and test splits stay clean.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

from ..core.params import ConfigError, from_dict, rng, to_dict
from .trigger import TriggerParams, apply_trigger, check_fits

#: offset of the poison generator's seed from the recipe seed (keeps the split streams untouched)
SEED_OFFSET = 0xBAD


@dataclass(frozen=True)
class BackdoorSpec(TriggerParams):
    """The trigger plus the attacker's labelling: what a backdoor check needs to know."""

    target: int = rng(0, None, default=0)
    mode: Literal["all_to_one", "all_to_all"] = "all_to_one"
    source: Optional[int] = rng(0, None, default=None)

    def __post_init__(self) -> None:
        if self.source is not None and self.mode != "all_to_one":
            raise ConfigError("source", "only applies to mode all_to_one")
        if self.source is not None and self.source == self.target:
            raise ConfigError("source", f"must differ from target ({self.target})")

    def validate(self, num_classes: int, image_size: Tuple[int, int], path: str) -> None:
        """Check the labels against ``num_classes`` and the patch against the image size.

        Raises:
            ConfigError: naming ``<path>.<field>``.
        """
        for name in ("target", "source"):
            v = getattr(self, name)
            if v is not None and v >= num_classes and (name == "source" or self.mode == "all_to_one"):
                raise ConfigError(f"{path}.{name}", f"must be a class index in [0, {num_classes}), got {v}")
        check_fits(self, image_size, path)

    def relabel(self, y: Tensor, num_classes: int) -> Tensor:
        """The attacker's labels for (triggered) samples whose true labels are ``y``."""
        if self.mode == "all_to_all":
            return (y + 1) % num_classes
        return torch.full_like(y, self.target)

    def victims(self, y: Tensor) -> Tensor:
        """Boolean mask of the samples the attack is meant to flip (for evaluation):
        all_to_one: true label differs from ``target`` (and equals ``source`` if set)."""
        if self.mode == "all_to_all":
            return torch.ones_like(y, dtype=torch.bool)
        keep = y != self.target
        return keep & (y == self.source) if self.source is not None else keep


@dataclass(frozen=True)
class PoisonParams(BackdoorSpec):
    """``rate``: fraction of the training set that is poisoned; ``inject``: add or replace."""

    rate: float = rng(0, 1, "[]", default=0.1)
    inject: Literal["add", "replace"] = "add"


def spec_of(params: BackdoorSpec) -> BackdoorSpec:
    """The :class:`BackdoorSpec` part of poisoning parameters (drops rate and inject)."""
    return BackdoorSpec(**{f.name: getattr(params, f.name) for f in fields(BackdoorSpec)})


def poison_indices(y: Tensor, params: PoisonParams, seed: int, path: str = "data.poison") -> Tensor:
    """The sorted indices of the ``round(rate * len(y))`` samples to poison (seeded).

    Raises:
        ConfigError: when ``source`` has fewer samples than the rate asks for.
    """
    n = int(round(params.rate * int(y.numel())))
    eligible = torch.arange(int(y.numel())) if params.source is None else torch.nonzero(y == params.source).flatten()
    if n > eligible.numel():
        raise ConfigError(f"{path}.rate", f"asks for {n} poisoned samples but only {eligible.numel()} training "
                                          f"samples have label {params.source}")
    g = torch.Generator().manual_seed(seed + SEED_OFFSET)
    pick = eligible[torch.randperm(eligible.numel(), generator=g)[:n]]
    return torch.sort(pick).values


def poison_arrays(x: Tensor, y: Tensor, params: PoisonParams, num_classes: int, seed: int,
                  path: str = "data.poison") -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Poison a training set; returns ``(x, y, facts)`` with facts for the data header.

    Raises:
        ConfigError: naming ``<path>.<field>`` for a target outside the classes, a patch
            larger than the images or a rate the source class cannot supply.
    """
    params.validate(num_classes, (int(x.shape[2]), int(x.shape[3])), path)
    idx = poison_indices(y, params, seed, path)
    xs, ys = apply_trigger(x[idx], params), params.relabel(y[idx], num_classes)
    if params.inject == "add":
        x, y = torch.cat([x, xs]), torch.cat([y, ys])
    else:
        x, y = x.clone(), y.clone()
        x[idx], y[idx] = xs, ys
    return x, y, {"poison": to_dict(params), "poisoned_samples": int(idx.numel())}


def poisoning_of(data: Any) -> Optional[PoisonParams]:
    """The poisoning a data bundle's training split received (None when it is clean)."""
    raw = (getattr(data, "info", None) or {}).get("poison")
    return None if raw is None else from_dict(PoisonParams, raw, "data.poison")
