"""Weight initialisation shared by the model zoo."""
from __future__ import annotations

from torch import nn


def kaiming_init(model: nn.Module) -> nn.Module:
    """He et al. (arXiv 1502.01852) init: conv weights ``N(0, 2 / fan_out)``, BatchNorm
    weight 1 and bias 0, linear layers ``N(0, 2 / fan_in)``-scaled (Kaiming normal) with
    zero bias. Returns ``model`` (modified in place)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
