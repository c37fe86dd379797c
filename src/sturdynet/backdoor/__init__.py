"""Backdoors: the ``backdoor`` check and the Fine-Pruning defense.

The poisoning itself is a data-set option (``data: {..., poison: {...}}``, see
:mod:`sturdynet.data.poison` and :mod:`sturdynet.data.trigger`), so one poisoned
training split serves base training and every variant's fine-tuning.
"""
from ..data.poison import BackdoorSpec, PoisonParams, poison_arrays, poison_indices, poisoning_of
from ..data.trigger import TriggerParams, apply_trigger, trigger_tensors
from . import check, fine_pruning  # noqa: F401  (register the check and the method)

__all__ = ["BackdoorSpec", "PoisonParams", "TriggerParams", "apply_trigger", "poison_arrays", "poison_indices",
           "poisoning_of", "trigger_tensors"]
