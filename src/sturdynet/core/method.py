"""Compression methods as transforms: ``apply(model, params, ctx) -> new model``.

Two kinds of method, told apart by the class attribute ``trains``:

- **Transforms** (:class:`CompressionMethod`, ``trains = False``) change the structure
  only: quantize, prune, binarize. Some read calibration data (activation ranges, a
  profile of activations) from an optional :class:`MethodContext`; those that need it
  raise a ValueError naming ``ctx`` when it is missing.
- **Training methods** (:class:`TrainingMethod`, ``trains = True``) train the network
  (lottery tickets, sparse training, binary QAT, distillation, ...). Their ``ctx`` is a
  required :class:`TrainingContext`: the data, the run's training config, the seed, the
  device, a ``fit`` function, ``finetune(epochs, overrides)`` for the fine-tuning
  schedule and the initial weights for rewinding. ``sturdynet.train.context`` builds
  one (the runner does), so no algorithm imports the training loop or the recipe module.

A method never changes the model it is given (it works on a deep copy). ``prepare``
builds only the structure (layers, masks, quantizers) so that a checkpoint's
state_dict loads into it, without data. What a method reached (sparsity, bit widths,
bytes when packed) is measured afterwards from the model itself by
:func:`sturdynet.core.storage.compression_facts`, so every method is measured the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import torch
from torch import nn

#: ``fit(model, cfg, *, callbacks=(), data=None, seed=None) -> per-epoch history``
FitFn = Callable[..., list]
#: ``finetune_config(base_cfg, epochs, overrides, path) -> cfg``
FinetuneFn = Callable[[Any, int, Optional[Mapping[str, Any]], str], Any]


@dataclass(kw_only=True)
class MethodContext:
    """What a structure-only transform may read besides the model.

    Attributes:
        data: a data bundle (``train``/``val`` splits); its training split is the
            calibration data.
        seed: the variant's seed.
        device: where the model lives (None: wherever its parameters are).
        log: methods record what they chose here (the runner stores it as ``method_log``).
    """

    data: Any = None
    seed: int = 0
    device: Optional[torch.device] = None
    log: dict = field(default_factory=dict)

    def calibration(self, samples: int, device: Optional[torch.device], who: str) -> torch.Tensor:
        """The first ``samples`` training images on ``device``.

        Raises:
            ValueError: naming ``ctx.data`` when there is no calibration data.
        """
        if self.data is None or getattr(self.data, "train", None) is None:
            raise ValueError(f"{who} needs calibration data: pass ctx=MethodContext(data=<bundle with a train split>)")
        if samples < 1:
            raise ValueError(f"{who}: calib_samples must be >= 1, got {samples}")
        return self.data.train.x[:samples].to(device if device is not None else self.device or "cpu")


@dataclass(kw_only=True)
class TrainingContext(MethodContext):
    """The required context of a method that trains (see the module docstring).

    Attributes:
        data: the run's data bundle (required).
        train: the run's training config (a ``TrainConfig``, required).
        fit: ``fit(model, cfg, *, callbacks=(), data=None, seed=None)`` trains ``model``
            in place and returns its history; ``data``/``seed`` default to the run's.
        finetune_config: builds the fine-tuning schedule from ``train``
            (``sturdynet.train.config.finetune_config``); use :meth:`finetune`.
        init_state: the base model's state_dict before training (lottery tickets
            rewind to it); None: methods re-initialise under ``seed``.
    """

    data: Any
    train: Any
    fit: FitFn
    finetune_config: FinetuneFn
    init_state: Optional[dict] = None

    def finetune(self, epochs: int, overrides: Optional[Mapping[str, Any]] = None, path: str = "finetune") -> Any:
        """The fine-tuning config: ``train`` at a tenth of its learning rate, no warm-up,
        no callbacks, ``epochs`` epochs, then ``overrides`` (errors name ``path``)."""
        return self.finetune_config(self.train, epochs, overrides, path)


def require_training(ctx: Any, who: str) -> TrainingContext:
    """``ctx`` if it is a :class:`TrainingContext`, else a TypeError naming the argument."""
    if not isinstance(ctx, TrainingContext):
        got = "nothing" if ctx is None else type(ctx).__name__
        raise TypeError(f"{who} trains the network: its ctx argument must be a TrainingContext "
                        f"(data, train, fit, finetune_config; sturdynet.train.context.training_context "
                        f"builds one), got {got}")
    return ctx


class CompressionMethod:
    """Base class of the structure-only transforms (``trains = False``).

    ``apply`` builds the compressed model (``ctx`` optional: calibration data);
    ``prepare`` builds only its structure so that a checkpoint's state_dict can be
    loaded into it.
    """

    #: True for methods that train; their ``apply`` needs a :class:`TrainingContext`.
    trains: ClassVar[bool] = False

    def apply(self, model: nn.Module, params: Any, ctx: Optional[MethodContext] = None) -> nn.Module:
        raise NotImplementedError

    def prepare(self, model: nn.Module, params: Any) -> nn.Module:
        if self.trains:
            raise NotImplementedError(f"{type(self).__name__} trains: it must define prepare()")
        return self.apply(model, params, None)

    def prepare_for_state(self, model: nn.Module, params: Any, state_dict: Mapping[str, Any]) -> nn.Module:
        """Like :meth:`prepare`, for methods whose structure only the checkpoint tells
        (e.g. channel counts chosen by a global threshold)."""
        return self.prepare(model, params)


class TrainingMethod(CompressionMethod):
    """Base class of the methods that train: ``apply(model, params, ctx)`` with a
    required :class:`TrainingContext` (check it with :func:`require_training`)."""

    trains: ClassVar[bool] = True

    def apply(self, model: nn.Module, params: Any, ctx: TrainingContext) -> nn.Module:  # type: ignore[override]
        raise NotImplementedError

    def prepare(self, model: nn.Module, params: Any) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define prepare()")


def run_steps(model: nn.Module, steps: Sequence[Any], ctx: Optional[MethodContext] = None,
              structure_only: bool = False, state_dict: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Apply the variant's methods (registered components) in order.

    With ``structure_only`` only the structure is built (``prepare``, or
    ``prepare_for_state`` when the checkpoint's ``state_dict`` is given) and ``ctx``
    is not used. Otherwise a step whose method trains needs a :class:`TrainingContext`.
    """
    from .registry import METHODS

    for step in steps:
        method = METHODS.get(step.name)()
        if not structure_only:
            if method.trains:
                require_training(ctx, step.name)
            model = method.apply(model, step.params, ctx)
        elif state_dict is not None:
            model = method.prepare_for_state(model, step.params, state_dict)
        else:
            model = method.prepare(model, step.params)
    return model


def CompressContext(**fields: Any) -> MethodContext:  # noqa: N802 - the former class name
    """The former all-purpose context, kept for transforms' callers: ``MethodContext(**fields)``.

    Raises:
        TypeError: when given training fields (``train``, ``fit``, ``init_state``); methods
            that train take a :class:`TrainingContext`
            (``sturdynet.train.context.training_context(data, cfg, seed=...)``).
    """
    training = sorted(set(fields) & {"train", "fit", "init_state", "finetune_config"})
    if training:
        raise TypeError(f"CompressContext no longer carries {', '.join(training)}: build a TrainingContext with "
                        "sturdynet.train.context.training_context(data, train_config, seed=...)")
    return MethodContext(**fields)
