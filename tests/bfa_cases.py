"""Small, deterministic BFA cases shared by the bit-identity test and its recorder.

``python tests/bfa_cases.py`` rewrites ``tests/data/bfa_reference.json`` with the choices of
the BFA as implemented now; the reference in the repository was recorded with the
implementation before activation caching (the full-forward search of arXiv 1903.12269).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

REFERENCE = Path(__file__).parent / "data" / "bfa_reference.json"


def _resnet(seed: int) -> nn.Module:
    from sturdynet.models.common import build_model

    torch.manual_seed(seed)
    m = build_model("resnet20", 3, 10, (8, 8), (0.5,) * 3, (0.25,) * 3, depth=8, width=0.5)
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _method(model: nn.Module, name: str, params: dict) -> nn.Module:
    from sturdynet.core.params import from_dict
    from sturdynet.core.registry import METHODS

    method, p = METHODS.get(name)(), from_dict(METHODS.params(name), params)
    # binarize trains (its apply needs a TrainingContext); with epochs 0 its structure is the model
    return (method.prepare(model, p) if method.trains else method.apply(model, p, None)).eval()


def cases():
    """(name, model, attack kwargs) of every recorded case."""
    from sturdynet.faults import ViewParams

    return [
        ("resnet_int8", _resnet(0), {"k_top": 5, "max_flips": 6}),
        ("resnet_int8_per_channel", _resnet(1), {"k_top": 3, "max_flips": 5, "view": ViewParams(per_channel=True)}),
        ("resnet_uniform4", _method(_resnet(2), "quant.uniform", {"bits": 4}), {"k_top": 5, "max_flips": 5}),
        ("resnet_uniform4_convs", _method(_resnet(5), "quant.uniform", {"bits": 4, "per_channel": True}),
         {"k_top": 4, "max_flips": 6, "view": ViewParams(float_layers="skip")}),
        ("resnet_ternary", _method(_resnet(3), "quant.ternary", {}),
         {"k_top": 5, "max_flips": 4, "view": ViewParams(float_layers="skip")}),
        ("resnet_binary", _method(_resnet(4), "binarize", {"activations": False}),
         {"k_top": 5, "max_flips": 4, "view": ViewParams(float_layers="skip")}),
    ]


def batches():
    from sturdynet.data.base import Split

    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 8, 8, generator=g)
    held = Split(torch.rand(40, 3, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g))
    return x, held


def record(run) -> dict:
    """``run(model, x, held, kwargs) -> BFAResult`` for every case; the JSON-able choices."""
    x, held = batches()
    out = {}
    for name, model, kw in cases():
        res = run(model, x, held, kw)
        out[name] = {"history": res.history, "curve": res.curve, "flips": res.flips, "stalled": res.stalled}
    return out


def run_exact(model, x, held, kw):
    from sturdynet.faults import BitFlipAttack

    return BitFlipAttack(target_accuracy=0.0, balanced=False, **kw).run(model, x, held, 10)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
    REFERENCE.write_text(json.dumps(record(run_exact), indent=0) + "\n")
    print("wrote", REFERENCE)
