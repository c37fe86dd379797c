"""sturdynet.quant.BPDA: the forward pass is the op's, the backward pass the declared one."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sturdynet.attacks import create_attack
from sturdynet.quant import BPDA, gradient_mode, has_estimators


def rounding(x):
    return torch.round(x * 4) / 4


def test_forward_exact_and_backward_declared():
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    b = BPDA(rounding)
    out = b(x)
    assert torch.equal(out, rounding(x.detach()))
    g, = torch.autograd.grad((out * 2).sum(), x)
    assert torch.equal(g, torch.full_like(x, 2.0))  # identity backward
    smooth = BPDA(rounding, backward=lambda t: t ** 2)
    g2, = torch.autograd.grad(smooth(x).sum(), x)
    assert torch.allclose(g2, 2 * x.detach())  # the approximation's derivative
    with gradient_mode(b, "true"):
        g3, = torch.autograd.grad(b(x).sum(), x)
    assert torch.equal(g3, torch.zeros_like(x))  # the op's own (zero) derivative
    assert has_estimators(nn.Sequential(b))


def test_bad_arguments_and_ste_without_switch():
    with pytest.raises(ValueError, match="backward"):
        BPDA(rounding, backward="nope")
    with pytest.raises(ValueError, match="grad_mode"):
        BPDA(rounding, grad_mode="x")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(ValueError, match="no gradient switch"):
        create_attack("pgd", plain, eps=0.1, grad_mode="ste")
    create_attack("pgd", nn.Sequential(BPDA(rounding), plain), eps=0.1, grad_mode="ste")  # declared: fine
