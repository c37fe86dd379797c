"""Input attacks (registered in ``sturdynet.core.registry.ATTACKS``).

``create_attack("pgd", model, eps=8/255, steps=10)`` builds an attack; calling it on
``(x, y)`` returns adversarial examples in the eps-ball and in [0, 1].
"""
from .base import Attack, AttackParams, dlr_loss, dlr_targeted_loss, lp_norm, margin, project
from . import fgsm, pgd, cw, apgd, fab, square, transfer, autoattack  # noqa: F401
from .autoattack import AutoAttack, EnsembleResult, build_members


def create_attack(name: str, model, **kwargs) -> Attack:
    """``create_attack("pgd", model, eps=8/255, steps=10)`` -> an attack to call on (x, y).

    Goes through ``ATTACKS.create``: the keyword arguments are validated against the
    attack's declaration (its ``Params`` dataclass); torchattacks' spellings are accepted
    (``"apgd-ce"``, ``"apgdt"``, ``"pgdl2"``, ``n_restarts=``).
    """
    from ..core.registry import ATTACKS

    return ATTACKS.create(name, model, **kwargs)


__all__ = ["Attack", "AttackParams", "AutoAttack", "EnsembleResult", "build_members", "create_attack", "dlr_loss",
           "dlr_targeted_loss", "lp_norm", "margin", "project"]
