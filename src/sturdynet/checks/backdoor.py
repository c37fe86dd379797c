"""The ``backdoor`` check: does the trigger still flip the model's decisions?

It stamps the trigger (BadNets patch, arXiv 1708.06733, or blended pattern, arXiv
1712.05526) on the test images the attack is meant to flip -- those whose true label is
not the target (all_to_one; only the ``source`` class when one is set), all of them
(all_to_all) -- and reports, on those images:

* ``attack_success_rate`` -- the fraction classified as the attacker's label (lower is
  better);
* ``accuracy`` -- the fraction of *triggered* images still classified as their true
  label (higher is better, like every accuracy of the report); ``per_sample`` holds
  the same outcome per image;
* ``clean_accuracy`` -- the accuracy on the same images without the trigger.

``kind: "backdoor"`` keeps the check out of the report's adversarial robust minimum.

Which trigger: by default the one the training split was poisoned with (the recipe's
``data.poison``, recorded in the data bundle), so training and check cannot disagree.
A ``trigger`` given to the check must then match it; on clean data the check's
``trigger`` (or the default trigger) measures how often a clean model maps triggered
images to the target by itself, the baseline of the attack success rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import nn

from ..core.params import ConfigError
from ..data.base import DataBundle
from ..data.poison import BackdoorSpec, poisoning_of, spec_of
from ..data.trigger import apply_trigger, patch_side
from .base import CheckContext, SampleParams, eval_split, summarize
from ..core.tensors import predict
from ..core.registry import CHECKS


@dataclass(frozen=True)
class BackdoorCheckParams(SampleParams):
    """``trigger``: None (default) uses the training poisoning (``data.poison``)."""

    trigger: Optional[BackdoorSpec] = None


def resolve_trigger(data: DataBundle, given: Optional[BackdoorSpec]) -> Tuple[BackdoorSpec, str]:
    """The trigger to test and where it came from (``data.poison``, ``check`` or ``default``).

    Raises:
        ConfigError: when the check's trigger differs from the training poisoning.
    """
    poison = poisoning_of(data)
    if poison is not None:
        trained = spec_of(poison)
        if given is not None and given != trained:
            raise ConfigError("trigger", "differs from the trigger the training data was poisoned with "
                                         "(data.poison); leave it out to test that one")
        return trained, "data.poison"
    if given is not None:
        return given, "check"
    return BackdoorSpec(), "default"


def describe(spec: BackdoorSpec, image_size: Tuple[int, int]) -> str:
    """One line for the report, e.g. ``"patch checkerboard 2x2 bottom_right, all_to_one -> 0"``."""
    if spec.type == "blend":
        look = f"blend alpha={spec.alpha:g} seed={spec.pattern_seed}"
    else:
        side = patch_side(spec, *image_size)
        look = f"patch {spec.pattern} {side}x{side} {spec.position}"
    if spec.mode == "all_to_all":
        return f"{look}, all_to_all y -> y+1"
    src = "all" if spec.source is None else str(spec.source)
    return f"{look}, {src} -> {spec.target}"


@CHECKS.register("backdoor", params=BackdoorCheckParams)
def backdoor_check(model: nn.Module, data: DataBundle, params: BackdoorCheckParams, ctx: CheckContext) -> dict:
    """Attack success rate and triggered accuracy on the first ``samples`` test images."""
    spec, source = resolve_trigger(data, params.trigger)
    spec.validate(data.num_classes, data.input_size, "trigger")
    split = eval_split(data, params.samples)
    victims = spec.victims(split.y)
    x, y = split.x[victims], split.y[victims]
    if not len(y):
        raise ValueError("no test sample is a victim of this trigger (every label is the target?)")
    wanted = spec.relabel(y, data.num_classes)
    clean = predict(model, x, params.batch_size).argmax(1)
    triggered = predict(model, apply_trigger(x, spec), params.batch_size).argmax(1)
    return summarize(triggered == y, kind="backdoor",
                     attack_success_rate=float((triggered == wanted).float().mean()),
                     clean_accuracy=float((clean == y).float().mean()),
                     trigger_source=source, trigger=describe(spec, data.input_size))
