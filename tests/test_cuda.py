"""Device and precision on CUDA (skipped on CPU-only machines): a recipe with device cuda and
AMP trains and evaluates there, results.json names the GPU, CUDA and cuDNN; checkpoints
load onto the chosen device; the API's clean accuracy on CUDA matches the CPU's."""
from __future__ import annotations

import json

import pytest
import torch

import byo_nets

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")]


def test_recipe_on_cuda_with_amp(tmp_path):
    from sturdynet.run.checkpoint import load_checkpoint
    from sturdynet.run.recipe import parse_recipe
    from sturdynet.run.runner import run_recipe

    recipe = parse_recipe({
        "device": "cuda", "data": {"name": "digits", "subset": {"train": 400, "test": 100}},
        "model": {"factory": "byo_nets:resnet_basic", "kwargs": {"width": 8}},
        "train": {"epochs": 3, "amp": True},
        "variants": [{"name": "dense"}, {"name": "pruned", "method": "prune.structured", "amount": 0.5},
                     {"name": "int4", "method": "quant.uniform", "bits": 4}],
        "evaluate": [{"check": "clean", "amp": True}, {"check": "pgd", "eps": 0.1, "steps": 3, "samples": 50},
                     {"check": "bfa", "samples": 60, "trials": 1, "max_flips": 2}]})
    res = run_recipe(recipe, tmp_path)
    assert all(v["status"] == "ok" for v in res["variants"]), [v.get("error") for v in res["variants"]]
    m = json.loads((tmp_path / "results.json").read_text())["machine"]
    assert m["gpu"] and m["cuda"] and m["cudnn"]
    model, _ = load_checkpoint(tmp_path / "variants" / "pruned.pt", torch.device("cuda"),
                               trusted_factory="byo_nets:resnet_basic")
    assert next(model.parameters()).is_cuda


def test_api_clean_accuracy_cpu_equals_cuda(digits):
    from sturdynet import check

    torch.manual_seed(0)
    net = byo_nets.concat_se(width=8).eval()
    data = (digits.test.x, digits.test.y)
    cpu = check(net, data, ["clean"], device="cpu")["clean"]
    gpu = check(net, data, ["clean"], device="cuda")["clean"]
    assert abs(cpu["accuracy"] - gpu["accuracy"]) <= 1 / len(digits.test.y)


def test_clipact_sites_on_cuda(digits):
    from sturdynet.core.method import MethodContext
    from sturdynet.core.registry import METHODS
    from sturdynet.defenses.clipact import ClipAct

    torch.manual_seed(0)
    net = byo_nets.resnet_basic(width=4).eval()
    params = METHODS.validate("faults.clipact", {"trials": 1, "iterations": 1, "min_iterations": 1, "samples": 40,
                                                 "rates": [1e-5]}, "faults.clipact")
    ctx = MethodContext(data=digits, seed=0)
    clipped = ClipAct().apply(net.cuda(), params, ctx)
    assert ctx.log["clipact"]["coverage"]["sites"] == 9
    assert all(b.is_cuda for b in clipped.buffers())
    x = digits.test.x[:8]
    cpu = ClipAct.clip(net.cpu())[0]
    cpu.load_state_dict({k: v.cpu() for k, v in clipped.state_dict().items()})
    with torch.no_grad():  # a value at a threshold may round to either side on the two devices
        assert int((clipped(x.cuda()).cpu().argmax(1) == cpu(x).argmax(1)).sum()) >= 7
