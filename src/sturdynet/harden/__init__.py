"""Hardening methods: defensive distillation, HYDRA robust pruning, robust lottery tickets."""
from . import distill, hydra, robust_ticket  # noqa: F401
