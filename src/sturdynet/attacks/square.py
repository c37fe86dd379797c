"""Square Attack (Andriushchenko et al., arXiv 1912.00043), L-inf and L2.

A score-based, gradient-free random search: it only calls the model's forward pass,
so gradient masking cannot fool it. Per sample and iteration it changes the
perturbation on a random square window and keeps the change when the loss (margin
``z_y - max_{k != y} z_k`` untargeted, cross-entropy on the target when targeted)
decreases; a sample stops as soon as it is fooled.

- L-inf (Algorithm 2): start from vertical stripes of +-eps (one sign per column and
  channel); each update sets the window to +-eps with one random sign per channel,
  re-drawn (up to 10 times, all draws made at once) when the window would not change.
- L2 (Algorithm 3): start from a grid of pseudo-Gaussian blocks ``eta`` of random
  sign, scaled to norm eps; each update moves the mass of a second window into the
  first, adds a new ``eta`` pattern there, and renormalises to norm eps.
- The window's side is ``s = round(sqrt(p * H * W))`` with ``p = p_init`` halved at
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query budget,
  rescaled to the actual budget ``n_queries`` (as AutoAttack does).

Deviation: windows start anywhere in ``[0, H - s]`` (the reference code never uses the
last position).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.params import rng
from ..core.registry import ATTACKS
from .base import Attack, AttackParams, margin

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
TRIES = 10  # sign draws per L-inf proposal while the window would not change


def p_schedule(it: int, n_queries: int, p_init: float) -> float:
    """The fraction of pixels changed at iteration ``it`` (schedule rescaled to ``n_queries``)."""
    scaled = int(it / n_queries * 10000)
    return p_init / 2 ** sum(scaled > t for t in HALVINGS)


def _rect(a: int, b: int) -> Tensor:
    """Concentric rectangles around the centre with weights ``1 / (k + 1)^2``, unit L2 norm."""
    if a == 0:
        return torch.zeros(0, b)
    ca, cb = a // 2, b // 2
    k = max(ca + 1, cb + 1)
    d = torch.maximum((torch.arange(a) - ca).abs()[:, None], (torch.arange(b) - cb).abs()[None, :])
    w = 1.0 / (torch.arange(k, dtype=torch.float32) + 1) ** 2
    suffix = w.flip(0).cumsum(0).flip(0)
    out = suffix[d.clamp(max=k - 1)]
    return out / out.norm()


def eta(s: int) -> Tensor:
    """The pseudo-Gaussian s x s pattern of the L2 attack: two halves of opposite sign."""
    out = torch.cat([_rect(s // 2, s), -_rect(s - s // 2, s)], 0)
    return out / out.norm()


def _spans(s: int, size: int, device: torch.device) -> Tensor:
    """(size - s + 1, size) bool: row ``v`` is True on ``v .. v + s - 1``."""
    key = (s, size, str(device))
    if key not in _SPANS:
        i = torch.arange(size, device=device)
        v = torch.arange(size - s + 1, device=device)[:, None]
        _SPANS[key] = (i >= v) & (i < v + s)
    return _SPANS[key]


def _windows_table(s: int, h: int, w: int, device: torch.device) -> Optional[Tensor]:
    """(h - s + 1, w - s + 1, h, w) bool, every s x s window's mask, when it has at most
    2**22 entries (None otherwise: the masks are then built from :func:`_spans`)."""
    if (h - s + 1) * (w - s + 1) * h * w > 1 << 22:
        return None
    key = ("table", s, h, w, str(device))
    if key not in _SPANS:
        _SPANS[key] = _spans(s, h, device)[:, None, :, None] & _spans(s, w, device)[None, :, None, :]
    return _SPANS[key]


_SPANS: dict = {}


@dataclass(frozen=True)
class SquareParams(AttackParams):
    """Square: ``n_queries`` budget per sample (the initial point counts as one),
    ``p_init`` initial fraction of pixels changed per update (AutoAttack uses 0.8),
    ``restarts`` independent runs (each on the points not yet fooled), ``loss``
    ``"margin"`` or ``"ce"`` (untargeted; targeted always uses CE)."""

    n_queries: int = rng(1, None, default=5000)
    p_init: float = rng(0, 1, "(]", default=0.8)
    restarts: int = rng(1, None, default=1)
    loss: Literal["margin", "ce"] = "margin"


@ATTACKS.register("square", params=SquareParams)
class Square(Attack):
    """Square Attack (fields: :class:`SquareParams`); gradient-free."""

    name = "square"
    Params = SquareParams
    gradient_free = True
    report_fields = ("n_queries",)

    # -- scoring -------------------------------------------------------------------------
    def _score(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(margin, loss): margin <= 0 means success; the search minimises loss (call
        under ``torch.no_grad``: :meth:`perturb` runs the whole search under it)."""
        z = self.mean_logits(x)
        if self.targeted:
            m = -margin(z, target)
            return m, F.cross_entropy(z, target, reduction="none")
        m = margin(z, y)
        return m, (m if self.loss == "margin" else -F.cross_entropy(z, y, reduction="none"))

    def _windows(self, n: int, h: int, w: int, s: int, dev: torch.device) -> Tuple[Tensor, Tensor]:
        """Random top-left corners in [0, h - s] x [0, w - s], one per sample."""
        return self.randint(h - s + 1, n, dev), self.randint(w - s + 1, n, dev)

    @staticmethod
    def _mask(vh: Tensor, vw: Tensor, s: int, h: int, w: int) -> Tensor:
        """(n, 1, h, w): True inside each sample's s x s window at (vh, vw)."""
        table = _windows_table(s, h, w, vh.device)
        if table is not None:
            return table[vh, vw][:, None]
        return _spans(s, h, vh.device)[vh][:, None, :, None] & _spans(s, w, vh.device)[vw][:, None, None, :]

    # -- the two norms ---------------------------------------------------------------------
    def _init(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if self.norm == "linf":
            signs = self.rand(n, c, 1, w, device=x.device).lt(0.5).float() * 2 - 1
            return (x + self.eps * signs).clamp(0, 1)
        s = max(h // 5, 1)
        start = (h - 5 * s) // 2 if h >= 5 * s else 0
        delta = torch.zeros_like(x)
        pat = eta(s).to(x.device)
        for vh in range(start, h - s + 1, s):
            for vw in range(start, w - s + 1, s):
                signs = self.rand(n, c, 1, 1, device=x.device).lt(0.5).float() * 2 - 1
                delta[:, :, vh:vh + s, vw:vw + s] += pat * signs
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + self.eps * delta / norm).clamp(0, 1)

    def _propose_linf(self, up: Tensor, down: Tensor, plus_best: Tensor, p: float) -> Tuple[Tensor, Tensor]:
        """A proposal from the current best point, which is ``up = clip(x + eps)`` where
        ``plus_best`` and ``down = clip(x - eps)`` elsewhere (every L-inf iterate is):
        returns (its ``plus`` state, the image)."""
        n, c, h, w = up.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
        vh, vw = self._windows(n, h, w, s, up.device)
        mask = self._mask(vh, vw, s, h, w)
        # Up to 10 draws of one sign per channel, re-drawn while the window would not change
        # (the authors' loop), vectorised. Per channel, +eps changes the window unless all of it
        # is at +eps already, -eps unless none of it is (up != down wherever eps > 0).
        n_plus = (plus_best & mask).sum((2, 3))  # (n, c)
        tries = self.rand(TRIES, n, c, device=up.device).lt(0.5)  # True: +eps
        changes = torch.where(tries, n_plus < s * s, n_plus > 0).any(2)  # (TRIES, n)
        first = (changes.cumsum(0) == 0).sum(0).clamp(max=TRIES - 1)  # the first draw that changes it
        plus = tries[first, torch.arange(n, device=up.device)].view(n, c, 1, 1)
        state = torch.where(mask, plus, plus_best)
        return state, torch.where(state, up, down)

    def _propose_l2(self, x: Tensor, x_best: Tensor, p: float) -> Tensor:
        n, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + (s % 2 == 0), h, w)
        delta = x_best - x
        (vh1, vw1), (vh2, vw2) = self._windows(n, h, w, s, x.device), self._windows(n, h, w, s, x.device)
        m1, m2 = self._mask(vh1, vw1, s, h, w), self._mask(vh2, vw2, s, h, w)
        view = delta.permute(0, 2, 3, 1)  # (n, h, w, c), shares storage with delta
        ar = torch.arange(n, device=x.device)[:, None, None]
        r1 = (vh1[:, None] + torch.arange(s, device=x.device))[:, :, None]
        c1 = (vw1[:, None] + torch.arange(s, device=x.device))[:, None, :]
        win1 = view[ar, r1, c1]  # (n, s, s, c)
        norm_w1 = win1.pow(2).sum((1, 2), keepdim=True).sqrt()
        norm_img = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        norm_union = (delta * (m1 | m2)).pow(2).sum((2, 3)).sqrt().view(n, 1, 1, c)
        pat = eta(s).to(x.device)
        flip = self.rand(n, device=x.device).lt(0.5).view(-1, 1, 1)
        pat = torch.where(flip, pat.t()[None], pat[None])[..., None]  # (n, s, s, 1)
        signs = self.rand(n, 1, 1, c, device=x.device).lt(0.5).float() * 2 - 1
        new = pat * signs + win1 / (norm_w1 + 1e-12)
        budget = ((self.eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_union ** 2).sqrt()
        new = new / (new.pow(2).sum((1, 2), keepdim=True).sqrt() + 1e-12) * budget
        delta = delta * ~m2
        view = delta.permute(0, 2, 3, 1)
        view[ar, r1, c1] = new
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + self.eps * delta / norm).clamp(0, 1)

    def _run(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        x_best = self._init(x)
        m_best, l_best = self._score(x_best, y, target)
        # per live sample: its search state (L-inf: where the best point is at +eps; L2: the
        # point), kept as compact tensors, gathered again only when a sample is fooled
        if self.norm == "linf":
            up, down = (x + self.eps).clamp(0, 1), (x - self.eps).clamp(0, 1)
            state, extra = x_best == up, (up, down)

            def propose(st, ex, p):
                return self._propose_linf(ex[0], ex[1], st, p)

            def point(st, ex):
                return torch.where(st, ex[0], ex[1])
        else:
            state, extra = x_best, (x,)

            def propose(st, ex, p):
                cand = self._propose_l2(ex[0], st, p)
                return cand, cand

            def point(st, ex):
                return st
        ida = (m_best > 0).nonzero().flatten()
        sa, ea, ya, ta = state[ida], tuple(e[ida] for e in extra), y[ida], None if target is None else target[ida]
        mba, lba = m_best[ida], l_best[ida]
        view = (-1,) + (1,) * (x.dim() - 1)
        for it in range(self.n_queries - 1):
            if ida.numel() == 0:
                break
            st, cand = propose(sa, ea, p_schedule(it, self.n_queries, self.p_init))
            m, l = self._score(cand, ya, ta)
            lower = l < lba
            better = lower | (m <= 0)
            lba = torch.where(lower, l, lba)
            mba = torch.where(better, m, mba)
            sa = torch.where(better.view(view), st, sa)
            done = mba <= 0
            if self.callback is not None:
                m_best[ida] = mba
                self.progress(it, m_best <= 0)
            if done.any():
                x_best[ida], m_best[ida], l_best[ida] = point(sa, ea), mba, lba
                keep = ~done
                ida, sa, ya, mba, lba = ida[keep], sa[keep], ya[keep], mba[keep], lba[keep]
                ea = tuple(e[keep] for e in ea)
                ta = None if ta is None else ta[keep]
        x_best[ida], m_best[ida], l_best[ida] = point(sa, ea), mba, lba
        return x_best, m_best <= 0

    @torch.no_grad()
    def perturb(self, x: Tensor, y: Tensor, target: Optional[Tensor]) -> Tensor:
        out = x.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        m0, _ = self._score(x, y, target)
        done |= m0 <= 0
        for r in range(self.restarts):
            todo = (~done).nonzero().flatten()
            if todo.numel() == 0:
                break
            adv, s = self._run(x[todo], y[todo], None if target is None else target[todo])
            if r == 0:
                out[todo] = adv
            out[todo[s]] = adv[s]
            done[todo[s]] = True
        return out
