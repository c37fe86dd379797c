"""Dynamic sparse training: SET, RigL, AGENT (callbacks ``set``, ``rigl``, ``agent``;
methods ``prune.set``, ``prune.rigl``)."""
from . import agent, rigl, set_evolution  # noqa: F401  (registers the callbacks and methods)
from .agent import AGENT, control_variate_tau
from .common import DynamicSparseCallback, drop_and_grow, drop_fraction, random_sparse_masks, reset_optimizer_state
from .rigl import RigL
from .set_evolution import SET

__all__ = ["AGENT", "DynamicSparseCallback", "RigL", "SET", "control_variate_tau", "drop_and_grow", "drop_fraction",
           "random_sparse_masks", "reset_optimizer_state"]
