"""The one training loop: SGD or Adam, warm-up + cosine schedule, masks, callbacks."""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import augment
from ..data.base import DataBundle, batches
from ..core.masks import apply_masks
from ..core.registry import ADVERSARIAL, CALLBACKS
from ..core.callbacks import Callback, TrainState
from ..core.tensors import eval_mode, memory_format_for
from .config import TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or Adam; no weight decay on biases and norm layers."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 (or constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def build_callbacks(cfg: TrainConfig) -> List[Callback]:
    """The callbacks a config asks for: its adversarial method, then ``callbacks``."""
    out: List[Callback] = []
    if cfg.adversarial is not None:
        out.append(ADVERSARIAL.create_from(cfg.adversarial))
    for c in cfg.callbacks:
        out.append(CALLBACKS.create_from(c))
    return out


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, split, batch_size: int = 512, device: Optional[torch.device] = None) -> dict:
    """Accuracy and mean cross-entropy of ``model`` (in eval mode) on a split."""
    device = device or next(model.parameters()).device
    correct, loss, n = 0, 0.0, 0
    with eval_mode(model):  # every submodule's own train/eval flag comes back
        for x, y in batches(split, batch_size):
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += int(y.numel())
    return {"accuracy": correct / max(1, n), "loss": loss / max(1, n)}


HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "compute_loss", "on_after_backward",
         "on_step_end", "on_epoch_end", "on_train_end")


def hooked(cbs: Sequence[Callback]) -> Dict[str, List[Callback]]:
    """For each hook, the callbacks (in order) that define it: a hook no callback overrides
    costs nothing per step."""
    def defines(cb: Callback, hook: str) -> bool:
        return hook in vars(cb) or getattr(type(cb), hook, None) is not getattr(Callback, hook)

    return {h: [cb for cb in cbs if defines(cb, h)] for h in HOOKS}


def fit(model: nn.Module, data: DataBundle, cfg: TrainConfig, seed: int = 0,
        callbacks: Sequence[Callback] = (), progress: Optional[Callable[[dict], None]] = None,
        device: Optional[torch.device] = None, channels_last: Optional[bool] = None) -> List[dict]:
    """Train ``model`` in place on ``data.train``; returns the per-epoch history.

    Deterministic on CPU for a given ``seed``. After every optimizer step the model's
    masks (``sturdynet.core.masks``) are re-applied, so pruned weights stay zero.
    Convolutional models train in the ``channels_last`` memory format on CPU (None: auto,
    see :func:`memory_format_for`) and are handed back contiguous. Per-step numbers
    (loss, correct predictions) stay on the device and are read once per epoch.

    Raises:
        TrainingDiverged: when the loss becomes NaN or infinite.
    """
    device = device or next(model.parameters()).device
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    fmt = memory_format_for(model, device, channels_last)
    model.to(device=device, memory_format=fmt)
    try:
        return _train(model, data, cfg, gen, list(build_callbacks(cfg)) + list(callbacks), progress, device, fmt)
    finally:
        if fmt != torch.contiguous_format:
            model.to(memory_format=torch.contiguous_format)


def _train(model: nn.Module, data: DataBundle, cfg: TrainConfig, gen: torch.Generator, cbs: List[Callback],
           progress: Optional[Callable[[dict], None]], device: torch.device, fmt: torch.memory_format) -> List[dict]:
    """The loop of :func:`fit` (model already on ``device`` in layout ``fmt``)."""
    hooks = hooked(cbs)
    amp = bool(getattr(cfg, "amp", False)) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)  # a no-op pass-through when disabled
    opt = make_optimizer(model, cfg)
    n = len(data.train)
    spe = max(1, math.ceil(n / cfg.batch_size))
    total = spe * cfg.epochs
    warm = int(round(cfg.warmup_epochs * spe))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm, cfg.schedule))
    state = TrainState(model=model, optimizer=opt, config=cfg, data=data, device=device, generator=gen,
                       total_steps=total, steps_per_epoch=spe)
    sync_every_step = device.type == "cpu"  # a host read is free on CPU, a stall on an accelerator
    for cb in hooks["on_train_begin"]:
        cb.on_train_begin(state)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        state.epoch, state.log = epoch, {}
        model.train()
        for cb in hooks["on_epoch_begin"]:
            cb.on_epoch_begin(state)
        seen = 0
        correct = torch.zeros((), dtype=torch.int64, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        for x, y in batches(data.train, cfg.batch_size, shuffle=True, generator=gen):
            if data.augment != "none":
                x = augment(data.augment, x, gen)
            x = x.to(device)
            state.x, state.y, state.logits = x.contiguous(memory_format=fmt) if x.dim() == 4 else x, y.to(device), None
            for cb in hooks["on_batch_begin"]:
                cb.on_batch_begin(state)
            loss = None
            for cb in hooks["compute_loss"]:
                loss = cb.compute_loss(state)
                if loss is not None:
                    break
            if loss is None:
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    state.logits = model(state.x)
                    loss = F.cross_entropy(state.logits, state.y, label_smoothing=cfg.label_smoothing)
            value = loss.detach()
            if sync_every_step and not torch.isfinite(value):
                raise TrainingDiverged(f"loss became {float(value)} at epoch {epoch + 1}, step {state.step + 1}")
            state.loss = loss
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            for cb in hooks["on_after_backward"]:
                cb.on_after_backward(state)
            scaler.step(opt)
            scaler.update()
            sched.step()
            apply_masks(model)
            state.step += 1
            for cb in hooks["on_step_end"]:
                cb.on_step_end(state)
            bs = int(state.y.numel())
            seen += bs
            loss_sum += value.double() * bs
            if not sync_every_step:
                finite &= torch.isfinite(value)
            if state.logits is not None:
                correct += (state.logits.detach().argmax(1) == state.y).sum()
            if state.stop:
                break
        if not bool(finite):
            raise TrainingDiverged(f"loss became non-finite in epoch {epoch + 1}")
        row = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, seen), "lr": opt.param_groups[0]["lr"]}
        if state.logits is not None:
            row["train_accuracy"] = int(correct) / max(1, seen)
        last = epoch + 1 == cfg.epochs
        if len(data.val) and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or last):
            v = evaluate_accuracy(model, data.val, device=device)
            row.update(val_accuracy=v["accuracy"], val_loss=v["loss"])
        for cb in hooks["on_epoch_end"]:
            cb.on_epoch_end(state)
        row.update(state.log)
        row["seconds"] = time.perf_counter() - t0
        state.history.append(row)
        if progress is not None:
            progress({"event": "epoch", "epoch": epoch + 1, "epochs": cfg.epochs, **row})
        if state.stop:
            break
    for cb in hooks["on_train_end"]:
        cb.on_train_end(state)
    model.eval()
    return state.history
