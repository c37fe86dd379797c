"""Gradient-masking checks, written as ``flags`` into a check's metrics.

The signs of masked or obfuscated gradients that Athalye et al. (arXiv 1802.00420,
section 3.1) and Carlini et al. (arXiv 1902.06705) list, as far as they can be read off
one evaluation:

- ``zero_gradients``: many samples whose input gradient is exactly zero (sign
  activations and rounding under true gradients); :func:`zero_gradient_fraction`;
- ``gradient_free_stronger``: a gradient-free attack (Square) fools points that the
  gradient attacks did not;
- ``true_weaker_than_ste``: attacks through the straight-through estimator fool many
  points that true-gradient attacks did not;
- ``eps_not_monotone`` / ``eps_flat``: robust accuracy rises, or does not fall, as
  eps grows;
- ``random_forward``: two forward passes on the same input differ (randomised
  defences need expectation over transformation).

Every flag is a string ``"<code>: <message>"``; the messages of flags that signal
masking contain the words "gradient masking" (or "obfuscated"), which the report
highlights.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.tensors import eval_mode
from ..quant.grad_mode import has_estimators


def _device(model: nn.Module) -> torch.device:
    from ..core.tensors import model_device

    return model_device(model)


def zero_gradient_fraction(model: nn.Module, x: Tensor, y: Tensor, grad_mode: str = "true",
                           batch_size: int = 256) -> Tuple[float, float]:
    """Fractions of samples whose CE input gradient is all zero, and of zero entries.

    Runs in eval mode with the given gradient mode (true: the deployed function's own
    derivative); the model's mode, estimators and ``.grad`` are left as they were.
    """
    if x.shape[0] == 0:
        return 0.0, 0.0
    from ..attacks.base import Attack

    probe = Attack(model, eps=0.0, grad_mode=grad_mode)
    dev = _device(model)
    zero_samples, zero_elems, total = 0, 0, 0
    with eval_mode(model):
        with probe.grad_context():
            for i in range(0, x.shape[0], batch_size):
                xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
                _, g, _ = probe.loss_and_grad(xb, lambda z, yb=yb: F.cross_entropy(z, yb, reduction="none"))
                flat = g.flatten(1) == 0
                zero_samples += int(flat.all(1).sum())
                zero_elems += int(flat.sum())
                total += flat.numel()
    return zero_samples / x.shape[0], zero_elems / max(1, total)


@torch.no_grad()
def forward_is_random(model: nn.Module, x: Tensor, batch_size: int = 64) -> bool:
    """Do two eval-mode forward passes on the same inputs differ (beyond float noise)?"""
    if x.shape[0] == 0:
        return False
    with eval_mode(model):
        xb = x[:batch_size].to(_device(model))
        a, b = model(xb), model(xb)
    scale = float(a.abs().max().clamp_min(1.0))
    return bool((a - b).abs().max() > 1e-5 * scale)


def zero_gradient_flags(model: nn.Module, x: Tensor, y: Tensor, used_mode: str, tolerance: float,
                        batch_size: int = 256, ran: Optional[Dict[str, bool]] = None
                        ) -> Tuple[Dict[str, float], List[str]]:
    """Zero-gradient metrics (true gradients, plus STE where the model has estimators)
    and the flag when the gradients the attack relied on vanish. For the ensemble
    (``used_mode="ensemble"``), ``ran`` says whether straight-through (``"ste"``) and
    gradient-free (``"free"``) members ran, so the text names only those."""
    metrics: Dict[str, float] = {}
    frac, elems = zero_gradient_fraction(model, x, y, "true", batch_size)
    metrics["zero_grad_fraction"] = frac
    metrics["zero_grad_elements"] = elems
    flags: List[str] = []
    if has_estimators(model):
        metrics["zero_grad_fraction_ste"], _ = zero_gradient_fraction(model, x, y, "ste", batch_size)
    if frac > tolerance:
        if used_mode == "ensemble":
            ran = ran or {}
            others = [k for k, v in (("straight-through", ran.get("ste")), ("gradient-free", ran.get("free"))) if v]
            how = ("true-gradient attacks alone would report false robustness; the worst case here also counts "
                   f"{' and '.join(others)} attacks" if others else
                   "only true-gradient attacks ran, so this robust accuracy is overstated")
        elif used_mode == "true":
            how = "this check attacked with true gradients, so its robust accuracy is overstated"
        else:
            how = f"this check attacked with {used_mode} gradients, but true-gradient attacks would report false robustness"
        flags.append(f"zero_gradients: gradient masking: {frac:.0%} of samples have an all-zero input gradient "
                     f"under true gradients; {how}")
    return metrics, flags


def random_forward_flags(model: nn.Module, x: Tensor, eot_iter: int = 1) -> List[str]:
    """The flag for a randomised forward pass (worded by whether the check used EOT)."""
    if not forward_is_random(model, x):
        return []
    if eot_iter > 1:
        return [f"random_forward: two forward passes on the same input differ; this check attacked with "
                f"expectation over transformation (EOT) over {eot_iter} passes, and its accuracy is one random "
                "draw of the model's predictions"]
    return ["random_forward: two forward passes on the same input differ: randomness can give obfuscated "
            "gradients; attack with expectation over transformation (set eot_iter, e.g. 20) before trusting "
            "robust accuracy"]


def curve_flags(curve: Sequence[dict], tolerance: float) -> List[str]:
    """Flags for robust accuracy that rises, or does not fall, as eps grows."""
    pts = sorted(((float(p["eps"]), float(p["accuracy"])) for p in curve), key=lambda t: t[0])
    flags: List[str] = []
    for (e0, a0), (e1, a1) in zip(pts, pts[1:]):
        if e1 > e0 and a1 > a0 + tolerance:
            flags.append(f"eps_not_monotone: possible gradient masking: robust accuracy rises from {a0:.1%} at "
                         f"eps={e0:g} to {a1:.1%} at eps={e1:g} (a larger ball contains the smaller one)")
            break
    if len(pts) >= 2:
        (e0, a0), (e1, a1) = pts[0], pts[-1]
        if e0 > 0 and e1 >= 2 * e0 and a0 > tolerance and a1 >= a0 - tolerance:
            flags.append(f"eps_flat: possible gradient masking: robust accuracy does not fall as eps grows "
                         f"({a0:.1%} at eps={e0:g}, {a1:.1%} at eps={e1:g})")
    return flags


def compare_flags(own: dict, others: Dict[str, dict], tolerance: float) -> List[str]:
    """Compare a check with earlier attack checks of the same variant at the same eps,
    norm and samples: a black-box attack stronger than a gradient attack is a masking sign."""
    flags: List[str] = []
    for cid, m in others.items():
        if not isinstance(m, dict) or m.get("attack") is None or m.get("error"):
            continue
        if any(m.get(k) != own.get(k) for k in ("norm", "eps", "samples")):
            continue  # only the same threat model on the same samples is comparable
        free, grad = (own, m) if own.get("gradient_free") else (m, own)
        if free is grad or not free.get("gradient_free") or grad.get("gradient_free"):
            continue
        if free["accuracy"] < grad["accuracy"] - tolerance:
            flags.append(f"gradient_free_stronger: gradient masking: the black-box {free['attack']} attack "
                         f"reaches {free['accuracy']:.1%} robust accuracy, below {grad['attack']}'s "
                         f"{grad['accuracy']:.1%} (check '{cid}') at eps={own['eps']:g}")
    return flags


def ensemble_flags(result, tolerance: float) -> Tuple[Dict[str, float], List[str]]:
    """Masking flags from an :class:`~sturdynet.attacks.EnsembleResult`."""
    n = max(1, int(result.clean.numel()))
    metrics: Dict[str, float] = {}
    flags: List[str] = []
    grad = result.fooled_by(lambda m: not m.gradient_free)
    free = result.fooled_by(lambda m: m.gradient_free)
    if any(m.gradient_free for m in result.members) and any(not m.gradient_free for m in result.members):
        only_free = float((free & ~grad).sum()) / n
        metrics["gradient_free_only"] = only_free
        if only_free > tolerance:
            flags.append(f"gradient_free_stronger: gradient masking: the gradient-free attack fooled {only_free:.1%} "
                         "of the samples that every gradient attack left correct")
    modes = {m.grad_mode for m in result.members if not m.gradient_free}
    if {"true", "ste"} <= modes:
        true = result.fooled_by(lambda m: m.grad_mode == "true")
        ste = result.fooled_by(lambda m: m.grad_mode == "ste")
        only_ste = float((ste & ~true).sum()) / n
        metrics["ste_only"] = only_ste
        if only_ste > tolerance:
            flags.append(f"true_weaker_than_ste: gradient masking: straight-through attacks fooled {only_ste:.1%} of "
                         "the samples that the true-gradient attacks left correct; true gradients of this model "
                         "are uninformative")
    return metrics, flags


def dedupe(flags: Sequence[str]) -> List[str]:
    """Keep the first flag of each code."""
    seen, out = set(), []
    for f in flags:
        code = f.split(":", 1)[0]
        if code not in seen:
            seen.add(code)
            out.append(f)
    return out


__all__ = ["zero_gradient_fraction", "forward_is_random", "zero_gradient_flags", "random_forward_flags",
           "curve_flags", "compare_flags", "ensemble_flags", "dedupe"]
