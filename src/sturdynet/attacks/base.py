"""The Attack base class (torchattacks-style): ``Attack(model, eps=..., ...)(x, y)``.

``__call__`` puts the model in eval mode and restores its mode afterwards, never
touches the caller's tensors or the model's weights or ``.grad`` (gradients are taken
with ``torch.autograd.grad`` on the input only), moves work to the model's device,
runs in batches, switches the model's gradient estimators when ``grad_mode`` is given,
and checks that the result lies in the eps-ball and in [0, 1].
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.grad_mode import gradient_mode, has_estimators

NORMS = ("linf", "l2")


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project perturbations onto the eps-ball of the given norm (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    factor = torch.clamp(eps / flat, max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def lp_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-sample L-inf or L2 norm."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


class Attack:
    """Base class for input attacks.

    Args:
        model: a classifier taking [0, 1] images and returning logits.
        eps: perturbation budget in the attack's norm (pixel units).
        norm: ``"linf"`` or ``"l2"``.
        targeted: if True, ``__call__`` needs ``target`` labels and the attack
            pushes towards them.
        grad_mode: ``"true"`` or ``"ste"`` to switch the model's quantizers' gradient
            estimators during the attack (forward unchanged); None leaves them.
        batch_size: samples per batch.
    """

    name = "attack"

    def __init__(self, model: nn.Module, *, eps: float, norm: str = "linf", targeted: bool = False,
                 grad_mode: Optional[str] = None, batch_size: int = 256, seed: int = 0) -> None:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.eps = float(eps)
        self.norm = norm
        self.targeted = targeted
        self.grad_mode = grad_mode
        self.batch_size = batch_size
        self.seed = seed
        self.generator: Optional[torch.Generator] = None

    # -- to implement -------------------------------------------------------------
    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        """Return adversarial examples for one batch already on the model's device."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def rand_like(self, x: Tensor) -> Tensor:
        """Uniform [0, 1) noise from the attack's seeded generator (on x's device)."""
        return torch.rand(x.shape, generator=self.generator).to(x.device)

    def randn_like(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self.generator).to(x.device)

    def loss_and_grad(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-sample loss ``fn(logits)``, its gradient w.r.t. ``x``, and the logits.

        The gradient of the summed loss is taken w.r.t. ``x`` alone, so the model's
        parameters' ``.grad`` are never written.
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            loss = fn(logits)
            grad, = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach()

    def ce(self, y: Tensor, target: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
        """Cross-entropy to increase: on the true label, or minus CE on the target."""
        if self.targeted:
            return lambda logits: -F.cross_entropy(logits, target, reduction="none")
        return lambda logits: F.cross_entropy(logits, y, reduction="none")

    def success(self, logits: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        """Per-sample: has the attack reached its goal."""
        pred = logits.argmax(1)
        return pred == target if self.targeted else pred != y

    # -- driver -------------------------------------------------------------------------
    def _check_inputs(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> None:
        if x.dim() != 4:
            raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError("x must lie in [0, 1] (normalization belongs inside the model)")
        if self.targeted and (target is None or target.shape != y.shape):
            raise ValueError(f"a targeted {self.name} attack needs target labels of shape {tuple(y.shape)}")

    def check_result(self, x: Tensor, x_adv: Tensor) -> None:
        """Assert the eps-ball and [0, 1] (with float tolerance)."""
        tol = 1e-5 * max(1.0, self.eps)
        if x_adv.shape != x.shape:
            raise AssertionError(f"{self.name}: result shape {tuple(x_adv.shape)} != input {tuple(x.shape)}")
        if float(x_adv.min()) < -1e-6 or float(x_adv.max()) > 1 + 1e-6:
            raise AssertionError(f"{self.name}: result leaves [0, 1]")
        dist = lp_norm(x_adv - x, self.norm)
        if dist.numel() and float(dist.max()) > self.eps + tol:
            raise AssertionError(f"{self.name}: result leaves the {self.norm} eps-ball "
                                 f"({float(dist.max()):.6g} > {self.eps:.6g})")

    def __call__(self, x: Tensor, y: Tensor, target: Optional[Tensor] = None) -> Tensor:
        self._check_inputs(x, y, target)
        was = self.model.training
        self.model.eval()
        self.generator = torch.Generator().manual_seed(self.seed)
        ctx = gradient_mode(self.model, self.grad_mode) if (self.grad_mode and has_estimators(self.model)) \
            else contextlib.nullcontext()
        outs = []
        try:
            with ctx:
                for i in range(0, x.shape[0], self.batch_size):
                    xb = x[i:i + self.batch_size].detach().to(self.device).clone()
                    yb = y[i:i + self.batch_size].to(self.device)
                    tb = target[i:i + self.batch_size].to(self.device) if target is not None else None
                    adv = self.perturb(xb, yb, tb).detach()
                    outs.append(adv.to(x.device))
        finally:
            self.model.train(was)
        x_adv = torch.cat(outs) if outs else x.detach().clone()
        self.check_result(x.detach(), x_adv)
        return x_adv
