"""The Attack base class (torchattacks-style): ``Attack(model, eps=..., ...)(x, y)``.

``__call__`` puts the model in eval mode and restores every submodule's own train/eval
flag afterwards (:func:`sturdynet.core.tensors.eval_mode`), never
touches the caller's tensors or the model's weights, buffers or ``.grad`` (gradients
are taken with ``torch.autograd.grad`` on the input only), moves work to the model's
device, runs in batches, switches the model's gradient estimators when ``grad_mode``
is given (the forward pass stays the deployed one), and checks that the result lies
in the eps-ball and in [0, 1].

Models with a random forward pass (randomised defences) are attacked with expectation
over transformation (EOT, Athalye et al., arXiv 1707.07397 and 1802.00420): with
``eot_iter = k`` every gradient is the mean of the per-sample loss gradients over ``k``
forward+backward passes, the loss is the mean loss, and the logits used to judge
success are the mean logits (the expected prediction).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import progress
from ..core.params import from_dict, rename_keys, rng
from ..core.tensors import eval_mode, memory_format_for, model_device
from ..quant.grad_mode import gradient_mode, has_estimators

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


def to_ball(x: Tensor, x_adv: Tensor, eps: float, norm: str) -> Tensor:
    """``x_adv`` projected onto the eps-ball around ``x`` and then onto [0, 1].

    For L2 the clamp to [0, 1] can only shorten the perturbation (both ``x`` and the
    clamp are coordinate-wise), so the result stays in the ball.
    """
    return (x + project(x_adv - x, eps, norm)).clamp(0, 1)


def unit(g: Tensor) -> Tensor:
    """Per-sample L2-normalised tensor (zero stays zero)."""
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{k != y} z_k`` per sample (negative means misclassified)."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -float("inf")).amax(1)
    return zy - other


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (arXiv 2003.01690, eq. 6), to maximise:
    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi`` sorted decreasingly."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    srt = logits.sort(dim=1, descending=True).values
    return -margin(logits, y) / (srt[:, 0] - srt[:, 2] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR (arXiv 2003.01690, eq. 7), to maximise:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``."""
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, got {logits.shape[1]}")
    srt = logits.sort(dim=1, descending=True).values
    zy = logits.gather(1, y[:, None]).squeeze(1)
    zt = logits.gather(1, target[:, None]).squeeze(1)
    return -(zy - zt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


def _input_grad(loss: Tensor, inp: Tensor) -> Optional[Tensor]:
    """Gradient of ``loss.sum()`` w.r.t. ``inp`` (None when unused); for a (N, L) loss the
    per-column gradients stacked along dim 1."""
    if loss.dim() == 1:
        return torch.autograd.grad(loss.sum(), inp, allow_unused=True)[0]
    cols = []
    for j in range(loss.shape[1]):
        g, = torch.autograd.grad(loss[:, j].sum(), inp, retain_graph=j + 1 < loss.shape[1], allow_unused=True)
        cols.append(torch.zeros_like(inp) if g is None else g)
    return torch.stack(cols, 1)


@dataclass(frozen=True)
class AttackParams:
    """The fields every attack takes; an attack's own declaration subclasses this.

    ``callback`` (optional) is called once per iteration of an iterative attack with a
    small dict (``attack``, ``iteration``, ``batch``, ``samples``, ``fooled``; some
    attacks add ``loss``), so a user can watch or log progress.
    """

    eps: float = rng(0, None, inf=True, default=8 / 255)  # inf: minimum-norm attacks (cw, fab)
    norm: Literal["linf", "l2"] = "linf"
    targeted: bool = False
    grad_mode: Optional[Literal["ste", "true"]] = None
    batch_size: int = rng(1, None, default=256)
    seed: int = 0
    eot_iter: int = rng(1, None, default=1)
    callback: Any = None


#: the :class:`AttackParams` fields that a check or an ensemble sets itself
COMMON_FIELDS = tuple(f.name for f in dataclasses.fields(AttackParams))


class Attack:
    """Base class for input attacks.

    Args:
        model: a classifier taking [0, 1] images and returning logits.
        **params: the fields of the attack's declaration ``Params`` (validated by
            :func:`sturdynet.core.params.from_dict`; :class:`AttackParams` for the shared
            ones): ``eps`` (budget in the attack's norm, pixel units), ``norm``
            (``"linf"`` or ``"l2"``), ``targeted`` (``__call__`` then needs ``target``
            labels), ``grad_mode`` (``"true"`` or ``"ste"`` switches the model's
            quantizers' gradient estimators during the attack, forward unchanged; None
            leaves them), ``batch_size``, ``seed`` (of the attack's own generator,
            restarted by each call), ``eot_iter`` (forward(+backward) passes averaged per
            gradient or score, EOT), ``callback`` (per-iteration progress).

    Facts about an attack are class attributes: ``gradient_free`` (forward passes only),
    ``ensemble`` (may be a member of the ``autoattack`` ensemble), ``check`` (the kind of
    recipe check generated for it: ``"curve"``, ``"min_norm"`` or None), ``check_into``
    (``(check, field, value)``: run by another attack's check when ``field`` is
    ``value``), ``check_defaults``, ``report_fields`` (parameters copied into the check's
    metrics), ``display`` and ``budget_hint`` (for flag texts), ``param_aliases``
    (other spellings of parameters, e.g. torchattacks' ``n_restarts``).
    """

    name = "attack"
    Params: type = AttackParams
    norms: Tuple[str, ...] = NORMS
    supports_targeted = True
    gradient_free = False
    ensemble = True
    check: Optional[str] = "curve"
    check_into: Optional[Tuple[str, str, str]] = None
    check_defaults: Dict[str, Any] = {}
    report_fields: Tuple[str, ...] = ()
    display: Optional[str] = None
    budget_hint = "raise the attack's budget"
    param_aliases: Dict[str, str] = {"n_restarts": "restarts"}

    def __init__(self, model: nn.Module, **params: Any) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        path = f"attack '{self.name}'"
        p = from_dict(self.Params, rename_keys(params, self.param_aliases, path), path)
        for f in dataclasses.fields(p):
            setattr(self, f.name, getattr(p, f.name))
        self.params = p
        if self.norm not in self.norms:
            raise ValueError(f"{self.name}: norm must be one of {', '.join(self.norms)}, got {self.norm!r}")
        if self.targeted and not self.supports_targeted:
            raise ValueError(f"{self.name} has no targeted mode")
        if self.grad_mode == "ste" and not has_estimators(model):
            raise ValueError(f"{self.name}: grad_mode='ste' but the model has no gradient switch (no quantizer and "
                             "no sturdynet.quant.BPDA), so the attack would silently use true gradients; declare "
                             "non-differentiable ops with sturdynet.quant.BPDA or use grad_mode='true'")
        self.model = model
        self.eps = float(self.eps)
        self.generator: Optional[torch.Generator] = None
        self.min_norms: Optional[Tensor] = None  # minimum-norm attacks: per sample, after a call
        self._norms: list = []
        self._batch = 0
        self._layout, self._layout_ok = torch.contiguous_format, True

    @classmethod
    def check_label(cls, params: Any) -> str:
        """The ``attack`` label a check reports for these (check) parameters."""
        return cls.name

    # -- to implement -------------------------------------------------------------
    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        """Return adversarial examples for one batch already on the model's device."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------
    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def rand(self, *shape: int, device: Optional[torch.device] = None) -> Tensor:
        """Uniform [0, 1) noise from the attack's seeded generator."""
        return torch.rand(shape, generator=self.generator).to(device or self.device)

    def rand_like(self, x: Tensor) -> Tensor:
        """Uniform [0, 1) noise shaped like ``x`` (on x's device)."""
        return torch.rand(x.shape, generator=self.generator).to(x.device)

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x`` (on x's device)."""
        return torch.randn(x.shape, generator=self.generator).to(x.device)

    def sphere_like(self, x: Tensor) -> Tensor:
        """A random direction per sample, of unit norm in the attack's norm (L-inf:
        uniform noise rescaled to L-inf norm 1; L2: a normalised Gaussian)."""
        if self.norm == "linf":
            t = 2 * self.rand_like(x) - 1
            return t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        return unit(self.randn_like(x))

    def randint(self, high: int, size: int, device: Optional[torch.device] = None) -> Tensor:
        """Integers in [0, high) from the attack's generator."""
        return torch.randint(high, (size,), generator=self.generator).to(device or self.device)

    def call_model(self, x: Tensor) -> Tensor:
        """The model's logits for ``x``, fed in the memory layout chosen for this call
        (channels_last for a convolutional model on the CPU: about 1.2x per forward and
        backward pass of a ResNet-20 there; the values, and the gradient w.r.t. ``x`` in
        ``x``'s own layout, are unchanged up to float rounding). A model that cannot take
        that layout (one that ``view``s its activations) gets the contiguous one from its
        first call on."""
        if self._layout is torch.contiguous_format:
            return self.model(x)
        if self._layout_ok:
            return self.model(x.contiguous(memory_format=self._layout))
        try:
            out = self.model(x.contiguous(memory_format=self._layout))
        except RuntimeError:
            self._layout = torch.contiguous_format
            return self.model(x)
        self._layout_ok = True
        return out

    def target_chunks(self, done: Tensor, n_targets: int) -> Iterator[List[int]]:
        """Target indices ``0 .. n_targets - 1`` in the chunks that multi-target attacks
        (APGD-T, FAB-T) run together as (sample, target) rows: as many targets as fit in
        ``batch_size`` rows for the samples not yet ``done`` (read anew before each chunk,
        so the chunks widen as samples fall), at least one. With a full batch every chunk
        is one target, the authors' order."""
        t = 0
        while t < n_targets:
            k = max(1, self.batch_size // max(1, int((~done).sum())))
            yield list(range(t, min(n_targets, t + k)))
            t += k

    @staticmethod
    def target_rows(todo: Tensor, ranked: Tensor, chunk: List[int]) -> Tuple[Tensor, Tensor]:
        """The (sample, target) rows of one chunk, target-major: each row's sample index
        (into the batch) and its target class (``ranked[sample, t]`` for ``t`` in ``chunk``)."""
        rows = todo.repeat(len(chunk))
        ts = torch.tensor(chunk, device=todo.device).repeat_interleave(todo.numel())
        return rows, ranked[rows, ts]

    def record_norms(self, norms: Tensor) -> None:
        """Minimum-norm attacks: record one batch's smallest adversarial norms (inf: none
        found); ``min_norms`` holds them all, on the CPU, after the call."""
        self._norms.append(norms)

    def progress(self, iteration: int, fooled: Optional[Tensor] = None, **info: Any) -> None:
        """Send one progress event to ``callback`` (nothing to do without one)."""
        if self.callback is None:
            return
        event = {"attack": self.name, "iteration": iteration, "batch": self._batch}
        if fooled is not None:
            event["samples"] = int(fooled.numel())
            event["fooled"] = int(fooled.sum())
        event.update({k: float(v.float().mean()) if isinstance(v, Tensor) else v for k, v in info.items()})
        self.callback(event)

    def loss_and_grad(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-sample loss ``fn(logits)``, its gradient w.r.t. ``x``, and the logits.

        The gradient of the summed loss is taken w.r.t. ``x`` alone, so the model's
        parameters' ``.grad`` are never written. When the output does not depend on
        ``x`` through differentiable operations (e.g. true gradients through a sign
        activation), the gradient is exactly zero. With ``eot_iter > 1`` all three are
        means over that many passes.
        """
        x = x.detach().requires_grad_(True)

        def closure(inp: Tensor) -> Tuple[Tensor, Tensor]:
            logits = self.call_model(inp)
            return fn(logits), logits

        return self.eot_grad(x, closure)

    def eot_grad(self, inp: Tensor, closure: Callable[[Tensor], Tuple[Tensor, Tensor]]
                 ) -> Tuple[Tensor, Tensor, Tensor]:
        """Mean over ``eot_iter`` passes of ``closure(inp) -> (per-sample loss, logits)``:
        returns (loss, gradient of the summed loss w.r.t. ``inp``, logits), detached.
        A loss of shape (N, L) gives the jacobian (N, L, *inp.shape[1:]) instead (one
        backward pass per column, one forward). ``inp`` must require grad; a loss that
        does not depend on it gives a zero gradient."""
        loss_sum = grad_sum = logit_sum = None
        for _ in range(self.eot_iter):
            with torch.enable_grad():
                loss, logits = closure(inp)
                grad = _input_grad(loss, inp) if loss.requires_grad else None
            if grad is None:
                grad = inp.new_zeros(tuple(loss.shape) + tuple(inp.shape[1:]))
            loss, logits = loss.detach(), logits.detach()
            if loss_sum is None:
                loss_sum, grad_sum, logit_sum = loss, grad, logits
            else:
                loss_sum, grad_sum, logit_sum = loss_sum + loss, grad_sum + grad, logit_sum + logits
        if self.eot_iter == 1:
            return loss_sum, grad_sum, logit_sum
        k = float(self.eot_iter)
        return loss_sum / k, grad_sum / k, logit_sum / k

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """The model's logits, averaged over ``eot_iter`` forward passes."""
        return self.mean_logits(x)

    def mean_logits(self, x: Tensor) -> Tensor:
        """:meth:`logits` in the caller's gradient context (a search loop that runs under
        one ``torch.no_grad`` saves entering it per query)."""
        out = self.call_model(x)
        for _ in range(self.eot_iter - 1):
            out = out + self.call_model(x)
        return out / self.eot_iter if self.eot_iter > 1 else out

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
        if not torch.is_floating_point(x):
            raise ValueError(f"x must be a float tensor in [0, 1], got {x.dtype}")
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
        if not torch.isfinite(x_adv).all():
            raise AssertionError(f"{self.name}: result holds NaN or inf")
        if x_adv.numel() and (float(x_adv.min()) < -1e-6 or float(x_adv.max()) > 1 + 1e-6):
            raise AssertionError(f"{self.name}: result leaves [0, 1]")
        dist = lp_norm(x_adv - x, self.norm)
        if dist.numel() and float(dist.max()) > self.eps + tol:
            raise AssertionError(f"{self.name}: result leaves the {self.norm} eps-ball "
                                 f"({float(dist.max()):.6g} > {self.eps:.6g})")

    def grad_context(self):
        """The gradient-mode context for the attacked model (a no-op when not asked)."""
        if self.grad_mode and has_estimators(self.model):
            return gradient_mode(self.model, self.grad_mode)
        return contextlib.nullcontext()

    def __call__(self, x: Tensor, y: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """Adversarial examples for ``x`` (labels ``y``; ``target`` in targeted mode)."""
        self._check_inputs(x, y, target)
        self._norms, self.min_norms = [], None
        if self.eps == 0 or x.shape[0] == 0:
            return x.detach().clone()
        self.generator = torch.Generator().manual_seed(self.seed)
        dev = self.device
        outs = []
        with eval_mode(self.model), self.grad_context():
            self._layout = memory_format_for(self.model, dev) if x.dim() == 4 else torch.contiguous_format
            self._layout_ok = False
            for i in range(0, x.shape[0], self.batch_size):
                self._batch = i // self.batch_size
                xb = x[i:i + self.batch_size].detach().to(dev).clone()
                yb = y[i:i + self.batch_size].to(dev)
                tb = target[i:i + self.batch_size].to(dev) if target is not None else None
                adv = self.perturb(xb, yb, tb).detach()
                outs.append(adv.to(x.device))
                progress.tick(i + xb.shape[0], x.shape[0])
        x_adv = torch.cat(outs).contiguous()
        self.min_norms = torch.cat(self._norms).cpu() if self._norms else None
        self.check_result(x.detach(), x_adv)
        return x_adv
