"""sturdynet: compress image classifiers and tell the truth about their robustness.

``from sturdynet import compress, check`` loads :mod:`sturdynet.api` on first use, so a
plain ``import sturdynet`` stays light (no torch import).
"""
__version__ = "0.1.0"

__all__ = ["compress", "check", "__version__"]


def __getattr__(name: str):
    if name in ("compress", "check"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sturdynet' has no attribute {name!r}")
