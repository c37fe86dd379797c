"""The Bit-Flip Attack with progressive bit search (Rakin, He and Fan, arXiv 1903.12269).

The attacker flips stored weight bits (Row-Hammer) to crush a quantized network. Each
iteration of the progressive bit search:

1. Loss ``L`` = cross-entropy of the model on one attack batch against fixed labels, the
   model's own predictions on that batch before the attack (the attacker needs no labels).
2. In-layer search, for every layer: take the ``k_top`` weights with the largest
   ``|dL/dw|``; the gradient on bit ``j`` of a k-bit two's-complement weight
   ``w = s * (-2^(k-1) b_(k-1) + sum_j 2^j b_j)`` is ``dL/db_j = dL/dw * s * c_j`` with
   ``c_j = 2^j`` and ``c_(k-1) = -2^(k-1)``. A bit may flip only when the flip goes
   uphill to first order: ``b_j = 0`` with ``dL/db_j > 0`` or ``b_j = 1`` with
   ``dL/db_j < 0`` (the paper's ``m = b XOR (sign(dL/db)/2 + 1/2)`` mask). Among those,
   the ``n`` bits with the largest ``|dL/db|`` form the layer's candidate.
3. Cross-layer search: apply each layer's candidate alone, measure ``L``, undo; commit
   the layer with the largest loss. If no candidate raises the loss above the current
   one, ``n`` grows by one and the search repeats (as the authors' code does).
4. Stop when accuracy on held-out data falls to random guess + 1% or the flip budget
   runs out. By default "accuracy" is the *balanced* accuracy (mean per-class recall):
   a model collapsed onto one class of a slightly unbalanced held-out set keeps that
   class's share as plain accuracy and would never stop; both are recorded.

Search modes. ``search="exact"`` makes the paper's choices bit for bit but scores a
layer's candidate by recomputing only the network from that layer on, from the
activations cached during the gradient pass (:mod:`sturdynet.faults.suffix`; cost
model in docs/faults.md). ``search="fast"`` ranks the layers' candidates by their
first-order loss increase ``sum |dL/db|`` (from the gradient already computed) and
measures only the best ``fast_top`` of them; only when none of those raises the loss
are the others measured too. It may choose other bits than the exact search.

Binary weights (``w = (2b - 1) s``) use ``dL/db = 2 s dL/dw``; TTQ ternary weights (2-bit
codes, :mod:`sturdynet.faults.ternary_store`) use ``dL/db_j = dL/dw * dw_j``, ``dw_j`` the
exact change of the weight when bit ``j`` goes 0 -> 1 (it depends on the other bit, since
the two signs have different scales). Float32/float16 storage is not supported (the
paper's gradient rule is for fixed-point bits).

Deviations: the attack runs on a deep copy (the caller's model is never changed); with
a per-channel scale the bit gradient includes each weight's own step ``s``; ``n`` stops
growing once it exceeds every layer's number of uphill bits (the authors' loop would
spin forever); and when no candidate raises the loss (common for binary weights, which
have one bit each), ``k_top`` is widened 4x at a time up to the largest layer before
the attack is declared stalled (``widen=False`` gives the paper's fixed ``k_top``), so a
stuck search is not reported as robustness.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import progress
from ..quant.base import Quantizer
from ..quant.grad_mode import gradient_mode, has_estimators
from .bitview import BitView, ViewParams, deploy
from .common import accuracies, as_images, as_split
from .suffix import SuffixLoss

SEARCHES = ("exact", "fast")


@dataclass
class BFAResult:
    """What one attack did.

    Attributes:
        model: the attacked deployed copy.
        flips: bits flipped in total.
        flips_to_random: flips when the stop metric first reached the target (None: never).
        curve: ``[{flips, accuracy, balanced_accuracy, loss}]`` after every iteration,
            starting at 0 flips.
        history: per iteration the layer and the (weight index, bit) pairs flipped.
        seconds: wall time of the search (held-out evaluations excluded).
        stalled: True when no bit could raise the loss any more.
        reached: flips at which plain ``accuracy`` and ``balanced_accuracy`` first reached
            the target (None: not within the attack).
        evaluations: candidate loss evaluations made by the cross-layer search.
    """

    model: nn.Module
    flips: int
    flips_to_random: Optional[int]
    curve: List[dict]
    history: List[dict] = field(default_factory=list)
    seconds: float = 0.0
    stalled: bool = False
    reached: Dict[str, Optional[int]] = field(default_factory=dict)
    evaluations: int = 0


class BitFlipAttack:
    """Untargeted BFA with progressive bit search.

    Args:
        k_top: weights per layer ranked by gradient magnitude (paper: 10).
        max_flips: flip budget.
        target_accuracy: stop at or below this held-out accuracy (default: 1/classes + 0.01).
        view: storage of float layers (the paper quantizes them to 8 bits per layer).
        batch_size: batch size of the held-out evaluations.
        widen: when no candidate raises the loss, retry with 4x ``k_top`` (up to the
            largest layer) before giving up, instead of reporting a stalled attack.
        balanced: stop on balanced accuracy (mean per-class recall; the default) instead
            of plain accuracy. On a class-balanced held-out set both agree.
        search: ``exact`` (the paper's choices) or ``fast`` (first-order ranking, see above).
        fast_top: layers measured per step by the fast search.
        cache: recompute only the suffix after the scored layer (exact either way).
    """

    def __init__(self, k_top: int = 10, max_flips: int = 100, target_accuracy: Optional[float] = None,
                 view: ViewParams = ViewParams(), batch_size: int = 512, widen: bool = True,
                 balanced: bool = True, search: str = "exact", fast_top: int = 3, cache: bool = True) -> None:
        if k_top < 1:
            raise ValueError(f"k_top must be >= 1, got {k_top}")
        if max_flips < 1:
            raise ValueError(f"max_flips must be >= 1, got {max_flips}")
        if view.float_layers in ("float32", "float16"):
            raise ValueError("bfa flips fixed-point bits: use float_layers 'int' (quantize float layers) or 'skip'")
        if search not in SEARCHES:
            raise ValueError(f"search must be exact or fast, got {search!r}")
        if fast_top < 1:
            raise ValueError(f"fast_top must be >= 1, got {fast_top}")
        self.k_top, self.max_flips, self.target_accuracy = k_top, max_flips, target_accuracy
        self.view, self.batch_size, self.widen, self.balanced = view, batch_size, widen, balanced
        self.search, self.fast_top, self.cache = search, fast_top, cache

    # -- in-layer search -----------------------------------------------------------------
    def candidate(self, view: BitView, i: int, grad: Tensor, n: int,
                  k_top: Optional[int] = None) -> Optional[Tuple[Tensor, Tensor, Tensor, int]]:
        """The ``n`` uphill bits with the largest bit gradients among the layer's top-k
        weights: (weight indices, bit indices, |dL/db|, number of uphill bits available),
        or None when no bit goes uphill."""
        site = view.sites[i]
        g = grad.reshape(-1)
        k = min(k_top or self.k_top, site.numel)
        idx = g.abs().topk(k).indices
        gw = g[idx].double()
        words = view.words_at(i, idx)
        planes = torch.arange(site.bits, device=words.device)
        b = (words[:, None] >> planes[None, :]) & 1
        gb = gw[:, None] * view.bit_steps(i, idx).to(gw.device)  # dL/db_j = dL/dw * dw/db_j
        uphill = ((b == 0) & (gb > 0)) | ((b == 1) & (gb < 0))
        score = (gb.abs() * uphill).reshape(-1)
        avail = int((score > 0).sum())
        if avail == 0:
            return None
        top = score.topk(min(n, avail)).indices
        return idx[top // site.bits].cpu(), (top % site.bits).cpu(), score[top].cpu(), avail

    # -- cross-layer search ----------------------------------------------------------------
    def _trial(self, view: BitView, i: int, cand, scorer: SuffixLoss, y: Tensor) -> float:
        """Loss with layer ``i``'s candidate applied; the layer is restored exactly after."""
        flat = view.sites[i].module.weight.data.view(-1)
        e = torch.unique(cand[0]).to(flat.device)
        old = flat[e].clone()
        try:
            view.flip(i, cand[0], cand[1])
            return scorer.loss(y, view.sites[i].name)
        finally:
            flat[e] = old

    def _best(self, view: BitView, grads, n: int, k_top: int, scorer: SuffixLoss, y: Tensor,
              loss: float) -> Tuple[Optional[tuple], int, int]:
        """(best (loss, layer, candidate) or None, most uphill bits of a layer, evaluations)."""
        cands = []
        for i in range(len(view.sites)):
            cand = self.candidate(view, i, grads[i], n, k_top)
            if cand is not None:
                cands.append((i, cand))
        avail = max((c[3] for _, c in cands), default=0)
        if self.search == "fast":  # first-order loss increase, largest first (stable)
            cands.sort(key=lambda ic: -float(ic[1][2].sum()))
        best, evals = None, 0
        for j, (i, cand) in enumerate(cands):
            if self.search == "fast" and j >= self.fast_top and best is not None and best[0] > loss:
                break
            trial = self._trial(view, i, cand, scorer, y)
            evals += 1
            if best is None or trial > best[0] or (trial == best[0] and i < best[1]):
                best = (trial, i, cand)
        return best, avail, evals

    # -- the attack ---------------------------------------------------------------------
    def run(self, model: nn.Module, x_attack: Any, held_out: Any, num_classes: int,
            callback: Optional[Callable[[dict], Optional[bool]]] = None) -> BFAResult:
        """Attack a deep copy of ``model`` (deployed with the attack's view).

        Args:
            model: the victim (unchanged).
            x_attack: the attack batch (N, C, H, W) in [0, 1]: a tensor, an ``(x, y)``
                tuple, a Split or a DataLoader (labels are not used).
            held_out: data whose accuracy decides when to stop (and fills the curve): a
                Split, an ``(x, y)`` tuple or a DataLoader of ``(x, y)`` batches.
            num_classes: for the random-guess target.
            callback: called after every committed step with ``{flips, accuracy,
                balanced_accuracy, loss, layer, seconds}``; returning True stops the attack.
        """
        x_attack, held_out = as_images(x_attack, "x_attack"), as_split(held_out, "held_out")
        if x_attack.dim() != 4 or x_attack.shape[0] == 0:
            raise ValueError(f"x_attack must be a non-empty (N, C, H, W) batch, got {tuple(x_attack.shape)}")
        target = self.target_accuracy if self.target_accuracy is not None else 1.0 / num_classes + 0.01
        victim = deploy(model, self.view).eval()
        view = BitView(victim, self.view.float_layers)
        for s in view.sites:
            if s.kind not in ("int", "binary", "ternary"):
                raise ValueError(f"bfa cannot attack layer {s.name}: it is stored as {s.kind}")
        largest = max(st.numel for st in view.sites)
        device = next(victim.parameters()).device
        x = x_attack.to(device)
        weights = [s.module.weight for s in view.sites]
        flags = [w.requires_grad for w in weights]
        for w in weights:
            w.requires_grad_(True)
        estimators = has_estimators(victim)
        # The cached activations come from the gradient pass, run in "ste" mode: valid for
        # the trials when every quantizer already runs in that mode.
        same_mode = all(q.grad_mode == "ste" for q in victim.modules() if isinstance(q, Quantizer))
        scorer = SuffixLoss(victim, [(s.name, s.module) for s in view.sites], x, trace=self.cache)
        with torch.no_grad():
            y = victim(x).argmax(1)
        loss = scorer.loss(y)
        key = "balanced_accuracy" if self.balanced else "accuracy"
        accs = accuracies(victim, held_out, self.batch_size)
        curve = [{"flips": 0, **accs, "loss": loss}]
        reached = {k: (0 if accs[k] <= target else None) for k in ("accuracy", "balanced_accuracy")}
        history: List[dict] = []
        flips, stalled, seconds, evaluations = 0, False, 0.0, 0
        while reached[key] is None and flips < self.max_flips:
            t0 = time.perf_counter()
            est = gradient_mode(victim, "ste") if estimators else contextlib.nullcontext()
            with est, torch.enable_grad():
                out = scorer.logits(refresh=same_mode)
                grads = torch.autograd.grad(F.cross_entropy(out, y), weights)
                loss = float(F.cross_entropy(out.detach(), y))
            if not same_mode:
                with torch.no_grad():
                    scorer.logits(refresh=True)
            best, k_top = None, self.k_top
            while True:
                n = 1
                while n <= self.max_flips - flips:
                    best, avail, ev = self._best(view, grads, n, k_top, scorer, y, loss)
                    evaluations += ev
                    if best is None or best[0] > loss or n >= avail:  # n covers every layer's uphill bits
                        break
                    n += 1
                if (best is not None and best[0] > loss) or not self.widen or k_top >= largest:
                    break
                k_top = min(4 * k_top, largest)  # stuck: search more weights per layer
            if best is None or best[0] <= loss:
                stalled = True
                seconds += time.perf_counter() - t0
                break
            new_loss, i, (elem, bit, _, _) = best
            view.flip(i, elem, bit)
            flips += int(elem.numel())
            step_s = time.perf_counter() - t0
            seconds += step_s
            history.append({"layer": view.sites[i].name, "weights": elem.tolist(), "bits": bit.tolist(),
                            "loss": new_loss, "k_top": k_top})
            accs = accuracies(victim, held_out, self.batch_size)
            curve.append({"flips": flips, **accs, "loss": new_loss})
            progress.tick(flips, self.max_flips)
            for k in reached:
                if reached[k] is None and accs[k] <= target:
                    reached[k] = flips
            if callback is not None and callback({"flips": flips, **accs, "loss": new_loss,
                                                  "layer": view.sites[i].name, "seconds": step_s}):
                break
        for w, f in zip(weights, flags):
            w.requires_grad_(f)
        return BFAResult(model=victim, flips=flips, flips_to_random=reached[key], curve=curve, history=history,
                         seconds=seconds, stalled=stalled, reached=reached, evaluations=evaluations)
