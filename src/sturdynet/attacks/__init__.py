"""Input attacks (registered in ``sturdynet.registry.ATTACKS``)."""
from .base import Attack, lp_norm, project
from . import pgd  # noqa: F401


def create_attack(name: str, model, **kwargs) -> Attack:
    """``create_attack("pgd", model, eps=8/255, steps=10)`` -> an attack to call on (x, y)."""
    from ..registry import ATTACKS

    return ATTACKS.get(name)(model, **kwargs)


__all__ = ["Attack", "create_attack", "lp_norm", "project"]
