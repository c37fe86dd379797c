"""End-to-end runs on a tiny digits recipe: results.json shape, resume, failures."""
import json

import pytest

from sturdynet.run.recipe import parse_recipe
from sturdynet.run.runner import Runner, run_recipe
from sturdynet.run.store import decode_bits

TINY = {
    "name": "tiny", "seed": 0,
    "data": {"name": "digits", "subset": {"train": 400, "test": 100}},
    "model": {"name": "small_cnn", "width": 4},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "variants": [
        {"name": "dense"},
        {"name": "pruned-80", "method": "prune.global_magnitude", "sparsity": 0.8, "finetune_epochs": 1},
        {"name": "int4", "method": "quant.uniform", "bits": 4},
    ],
    "evaluate": [{"check": "clean"}, {"check": "pgd", "eps": [0.1, 0.3], "steps": 3, "samples": 50}],
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    events = []
    res = run_recipe(parse_recipe(TINY), out, progress=events.append)
    return out, res, events


def test_results_shape(tiny_run):
    out, res, _ = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["variants"] == res["variants"]
    assert on_disk["recipe"]["name"] == "tiny" and on_disk["seed"] == 0
    assert on_disk["versions"]["torch"] and "git_commit" in on_disk
    names = [v["name"] for v in on_disk["variants"]]
    assert names == ["dense", "pruned-80", "int4"]
    dense, pruned, q = on_disk["variants"]
    for v in on_disk["variants"]:
        assert v["status"] == "ok", v
        assert set(v["metrics"]) == {"clean", "pgd"}
        assert len(decode_bits(v["metrics"]["clean"]["per_sample"])) == 100
        assert len(v["metrics"]["pgd"]["curve"]) == 2
    assert dense["compression_ratio"] == 1.0 and dense["method"] is None
    assert pruned["sparsity"] == pytest.approx(0.8, abs=1e-3) and pruned["size_bytes"] < dense["size_bytes"] / 3
    assert q["bits"] == 4 and q["size_bytes"] < dense["size_bytes"]
    assert pruned["params"]["sparsity"] == 0.8 and len(pruned["finetune_history"]) == 1
    # PGD never beats clean accuracy on the same samples
    for v in on_disk["variants"]:
        clean = decode_bits(v["metrics"]["clean"]["per_sample"])[:50]
        adv = decode_bits(v["metrics"]["pgd"]["per_sample"])
        assert all(a <= c for a, c in zip(adv, clean))
    assert (out / "base.safetensors").exists() and (out / "variants" / "int4.safetensors").exists()


def test_resume_skips_finished_variants(tiny_run):
    out, res, _ = tiny_run
    events = []
    again = run_recipe(parse_recipe(TINY), out, progress=events.append)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert "train base model" not in stages and "load base model" in stages
    assert [e["variant"] for e in events if e["event"] == "skip"] == ["dense", "pruned-80", "int4"]
    assert again["variants"] == res["variants"]


def test_resume_after_interruption_and_new_check(tmp_path):
    recipe = parse_recipe(TINY)
    runner = Runner(recipe, tmp_path, progress=_stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [v["name"] for v in saved["variants"]] == ["dense"]
    events = []
    bigger = dict(TINY, evaluate=TINY["evaluate"] + [{"check": "pgd", "id": "pgd-l2", "norm": "l2", "eps": 1.0,
                                                       "steps": 2, "samples": 20}])
    res = run_recipe(parse_recipe(bigger), tmp_path, progress=events.append)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    # dense: only the new check ran; the others were built
    assert "dense: clean" not in stages and "dense: pgd-l2" in stages
    assert "pruned-80: compress" in stages and "int4: compress" in stages
    assert all(v["status"] == "ok" and "pgd-l2" in v["metrics"] for v in res["variants"])
    assert res["variants"][0]["metrics"]["clean"] == saved["variants"][0]["metrics"]["clean"]


def _stop_after_first(event):
    """Interrupt the run once the first variant is stored."""
    if event["event"] == "variant":
        raise KeyboardInterrupt


def test_failed_variant_recorded_and_others_run(tmp_path):
    bad = dict(TINY, variants=[
        {"name": "dense"},
        {"name": "explodes", "method": "prune.global_magnitude", "sparsity": 0.5, "finetune_epochs": 1,
         "finetune": {"lr": 1.0e30, "weight_decay": 0}},
        {"name": "int8", "method": "quant.uniform", "bits": 8}])
    res = run_recipe(parse_recipe(bad), tmp_path)
    by = {v["name"]: v for v in res["variants"]}
    assert by["explodes"]["status"] == "failed" and "TrainingDiverged" in by["explodes"]["error"]
    assert by["int8"]["status"] == "ok" and by["dense"]["status"] == "ok"


def test_other_recipe_in_same_folder_refused(tiny_run):
    out, _, _ = tiny_run
    other = dict(TINY, seed=1)
    with pytest.raises(ValueError, match="different recipe"):
        run_recipe(parse_recipe(other), out)


CIFAR = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.exists(), reason="needs ../shared/datasets/cifar10-jpeg.tar.gz")
def test_cifar10_archive_resnet20_recipe_trains_and_reports(tmp_path):
    recipe = {
        "name": "cifar-tiny", "seed": 0,
        "data": {"name": "imagefolder", "path": str(CIFAR), "augment": "crop_flip",
                 "subset": {"train": 1000, "val": 100, "test": 200}},
        "model": {"name": "resnet20"},
        "train": {"epochs": 2, "batch_size": 128, "lr": 0.1},
        "variants": [{"name": "dense"}, {"name": "int8", "method": "quant.uniform", "bits": 8}],
        "evaluate": [{"check": "clean"}, {"check": "pgd", "eps": 0.0313725, "steps": 2, "samples": 50}],
    }
    res = run_recipe(parse_recipe(recipe), tmp_path)
    assert res["data"]["input_size"] == [32, 32] and res["data"]["num_classes"] == 10
    dense, q = res["variants"]
    assert dense["status"] == q["status"] == "ok"
    assert dense["metrics"]["clean"]["accuracy"] > 0.15  # above chance after 2 epochs on 1000 images
    assert q["size_bytes"] < dense["size_bytes"] / 3
    from sturdynet.report import render_report

    paths = render_report(tmp_path)
    assert (tmp_path / "report.html").exists() and paths
