"""Defensive distillation (Papernot et al., arXiv 1511.04508).

1. The teacher (a copy of the given model) is trained with its softmax at temperature
   T: loss = CE(softmax(z / T), y).
2. A student of the same architecture, freshly initialised, is trained on the
   teacher's soft labels at the same temperature: loss = -sum_j p_j^T log softmax(z_s / T)_j
   with p^T = softmax(z_teacher / T).
3. The student is deployed at temperature 1 (its logits are used as they are).

The student's logits end up about T times larger than they need to be, which saturates
the softmax and shrinks cross-entropy gradients: FGSM-style attacks then look much
weaker, while attacks on margins or logits (C&W, APGD-DLR, the ``robust`` ensemble) are
not slowed (Carlini & Wagner, arXiv 1607.04311). Deviations: both losses are multiplied
by T, which gives the hard-label loss the gradient magnitude of plain cross-entropy
(d/dz of CE(z/T) is (p - y)/T) so the run's learning rate needs no retuning (Hinton et
al., arXiv 1503.02531, scale soft losses by T^2; with a randomly initialised student
that diverged at ordinary learning rates here); and the teacher starts from the
given trained model and is fine-tuned at temperature T for ``teacher_epochs`` rather
than trained from scratch (``teacher_epochs`` can be set as high as a full schedule).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.method import TrainingContext, TrainingMethod, require_training
from ..core.params import rng
from ..core.registry import METHODS
from ..core.callbacks import Callback, TrainState


class TemperatureCE(Callback):
    """T times the cross-entropy of softmax(logits / T) against the hard labels."""

    def __init__(self, temperature: float) -> None:
        self.t = temperature

    def compute_loss(self, state: TrainState) -> Optional[Tensor]:
        state.logits = state.model(state.x)
        return self.t * F.cross_entropy(state.logits / self.t, state.y)


class SoftLabelLoss(Callback):
    """T times the cross-entropy between the teacher's and the student's softmax at T."""

    def __init__(self, teacher: nn.Module, temperature: float) -> None:
        self.teacher = teacher.eval()
        self.t = temperature

    def compute_loss(self, state: TrainState) -> Optional[Tensor]:
        with torch.no_grad():
            soft = F.softmax(self.teacher(state.x) / self.t, dim=1)
        state.logits = state.model(state.x)
        return self.t * soft_cross_entropy(state.logits / self.t, soft)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of -sum_j p_j log softmax(logits)_j."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer's parameters drawn afresh (seeded)."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in fresh.modules():
        if m is not fresh and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return fresh


@dataclass(frozen=True)
class DistillParams:
    temperature: float = rng(1, None, default=20.0)
    teacher_epochs: int = rng(0, None, default=5)
    student_epochs: int = rng(1, None, default=10)
    lr: Optional[float] = rng(0, None, "(]", default=None)


@METHODS.register("distill", params=DistillParams)
class DefensiveDistillation(TrainingMethod):
    """Teacher at temperature T, then a fresh student on its soft labels (see module doc)."""

    def prepare(self, model: nn.Module, params: DistillParams) -> nn.Module:
        return copy.deepcopy(model)

    def apply(self, model: nn.Module, params: DistillParams, ctx: TrainingContext) -> nn.Module:
        require_training(ctx, "distill")
        lr = params.lr if params.lr is not None else ctx.train.lr
        base_cfg = dataclasses.replace(ctx.train, adversarial=None, callbacks=(), lr=lr)
        teacher = copy.deepcopy(model)
        if params.teacher_epochs > 0:
            ctx.fit(teacher, dataclasses.replace(base_cfg, epochs=params.teacher_epochs, warmup_epochs=0.0),
                    callbacks=[TemperatureCE(params.temperature)])
        teacher.eval()
        student = reinitialize(model, ctx.seed)
        hist = ctx.fit(student, dataclasses.replace(base_cfg, epochs=params.student_epochs),
                       callbacks=[SoftLabelLoss(teacher, params.temperature)])
        ctx.log["distill"] = {"temperature": params.temperature, "student_history": hist}
        return student.eval()
