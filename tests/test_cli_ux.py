"""Command-line conveniences (issue 13 part 3): --set overrides, validate, fractions, shipped recipes,
YAML booleans for grad_mode, closed pipes, global options after the subcommand, per-batch progress
with time left, --json for evaluate and list."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sturdynet.cli import build_parser, main
from sturdynet.core import progress
from sturdynet.core.overrides import apply_overrides, parse_path
from sturdynet.core.params import ConfigError, parse_number
from sturdynet.run.recipe import parse_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name: cli-ux
seed: 0
data: {name: digits, subset: {train: 200, test: 60}}
model: {name: small_cnn, width: 4}
train: {epochs: 2, batch_size: 64}
variants:
  - {name: dense}
  - {name: int4, method: quant.uniform, bits: 4}
evaluate:
  - {check: clean}
  - {check: pgd, eps: 8/255, steps: 2, samples: 30}
"""


def recipe_file(tmp_path, text=TINY):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return str(p)


# ---- --set ---------------------------------------------------------------------------------
def test_parse_path():
    assert parse_path("variants[1].bits") == ["variants", 1, "bits"]
    assert parse_path("evaluate[pgd].eps") == ["evaluate", "[pgd", "eps"]
    assert parse_path("train.epochs") == ["train", "epochs"]
    for bad in ("a..b", "a[1]b", "a[]", ""):
        with pytest.raises(ConfigError):
            parse_path(bad)


def test_overrides_edit_a_copy_and_name_items():
    import yaml

    raw = yaml.safe_load(TINY)
    out = apply_overrides(raw, ["train.epochs=1", "variants[1].bits=3", "variants[int4].per_channel=false",
                                "evaluate[pgd].eps=[0.1, 0.2]", "train.lr=1/32", "variants[-1].name=q3"])
    assert raw["train"]["epochs"] == 2 and raw["variants"][1]["bits"] == 4  # the input is untouched
    assert out["train"]["epochs"] == 1 and out["variants"][1] == {"name": "q3", "method": "quant.uniform",
                                                                   "bits": 3, "per_channel": False}
    r = parse_recipe(out)
    assert r.train.lr == pytest.approx(1 / 32) and r.evaluate[1].check.params.eps == (0.1, 0.2)
    with pytest.raises(ConfigError, match=r"variants\[5\]: index out of range \(the list has 2 items\)"):
        apply_overrides(raw, ["variants[5].bits=3"])
    with pytest.raises(ConfigError, match=r"variants\[int8\]: no item named 'int8' \(items: dense, int4\)"):
        apply_overrides(raw, ["variants[int8].bits=3"])
    with pytest.raises(ConfigError, match="expected PATH=VALUE"):
        apply_overrides(raw, ["train.epochs"])


def test_run_set_is_validated_like_the_recipe(tmp_path, capsys):
    code = main(["run", recipe_file(tmp_path), "--set", "variants[1].bits=12", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "variants[1].bits: must be in [2, 8], got 12 (from --set variants[1].bits=12)" in err
    assert main(["run", recipe_file(tmp_path), "--set", "train.epoch=1"]) == 2
    assert "train.epoch: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---- validate -----------------------------------------------------------------------------
def test_validate_prints_a_summary(tmp_path, capsys):
    assert main(["validate", recipe_file(tmp_path), "--set", "train.epochs=1", "--set", "variants[1].bits=3"]) == 0
    out = capsys.readouterr().out
    assert "recipe 'cli-ux'" in out and ": valid" in out and "1 epochs" in out
    assert "int4" in out and "quant.uniform (bits=3" in out and "2 checks: clean, pgd" in out
    assert main(["validate", recipe_file(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "cli-ux" and data["evaluate"][1]["eps"] == pytest.approx(8 / 255)
    assert main(["validate", recipe_file(tmp_path), "--set", "evaluate[1].steps=0"]) == 2
    assert "evaluate[1].steps: must be >= 1" in capsys.readouterr().err


def test_validate_shows_adversarial_finetuning(capsys):
    assert main(["validate", "threats-digits"]) == 0
    out = capsys.readouterr().out
    assert "pruned-90-at" in out and "fine-tune 10 epochs (adversarial)" in out


# ---- fractions and grad_mode ----------------------------------------------------------------
def test_fractions_for_float_fields():
    assert parse_number("8/255") == pytest.approx(8 / 255)
    assert parse_number(" 2 / 255 ") == pytest.approx(2 / 255)
    assert parse_number("1e-3") == 1e-3
    assert parse_number("8/0") is None and parse_number("a/b") is None
    import yaml

    raw = yaml.safe_load(TINY.replace("eps: 8/255", "eps: [2/255, 8/255], alpha: 1/255"))
    params = parse_recipe(raw).evaluate[1].check.params
    assert params.eps == pytest.approx((2 / 255, 8 / 255)) and params.alpha == pytest.approx(1 / 255)
    raw["evaluate"][1]["eps"] = "8/x"
    with pytest.raises(ConfigError, match=r"evaluate\[1\]\.eps"):
        parse_recipe(raw)


def test_grad_mode_yaml_booleans():
    import yaml

    raw = yaml.safe_load(TINY.replace("samples: 30}", "samples: 30, grad_mode: true}"))
    assert raw["evaluate"][1]["grad_mode"] is True  # what YAML makes of it
    assert parse_recipe(raw).evaluate[1].check.params.grad_mode == "true"
    raw["evaluate"][1]["grad_mode"] = False
    with pytest.raises(ConfigError, match=r"evaluate\[1\]\.grad_mode: .*got the boolean false .*quote"):
        parse_recipe(raw)
    raw["evaluate"][1]["grad_mode"] = "ste"
    assert parse_recipe(raw).evaluate[1].check.params.grad_mode == "ste"


# ---- shipped recipes ----------------------------------------------------------------------
def test_shipped_recipes_by_name(capsys):
    from sturdynet.recipes import find, shipped

    names = shipped()
    assert {"default", "threats-digits", "binary-digits"} <= set(names)
    assert find("threats-digits") == names["threats-digits"] == find("threats-digits.yaml")
    top = ROOT / "recipes" / "threats-digits.yaml"  # the checkout's recipes/ stays usable
    assert top.is_file() and top.read_text() == names["threats-digits"].read_text()
    with pytest.raises(FileNotFoundError, match="shipped recipes: .*threats-digits"):
        find("threats-digit")
    assert main(["list", "recipes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recipes:\n") and "threats-digits" in out and "Every threat model" in out
    assert main(["list", "recipes", "threats-*", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["recipes"]] == ["threats-cifar10", "threats-digits"]
    assert main(["run", "no-such-recipe"]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_recipes_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'sturdynet = ["recipes/*.yaml"]' in text
    pkg = ROOT / "src" / "sturdynet" / "recipes"
    assert (ROOT / "recipes").resolve() == pkg.resolve() and len(list(pkg.glob("*.yaml"))) >= 8


# ---- pipes and global options ---------------------------------------------------------------
def test_closed_pipe_exits_quietly():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "sturdynet", "list"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    first = p.stdout.readline()
    p.stdout.close()  # like `| head -1`
    err = p.stderr.read().decode()
    code = p.wait(timeout=120)
    assert first.strip().endswith(b":")
    assert code == 0 and "Traceback" not in err and "BrokenPipe" not in err and err == ""


def test_global_options_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["list", "--debug", "-q"]).debug is True
    a = parser.parse_args(["--debug", "-q", "list"])
    assert a.debug is True and a.quiet is True
    a = parser.parse_args(["list"])
    assert a.debug is False and a.quiet is False
    assert parser.parse_args(["run", "threats-digits", "-q"]).quiet is True


# ---- progress -------------------------------------------------------------------------------
def test_progress_parts_and_ticks():
    events = []
    with progress.reporting(events.append, "job", interval=0):
        for i in range(2):
            with progress.part(i, 2):
                for k in range(1, 5):
                    progress.tick(k, 4)
        progress.tick(1, 1)
    fr = [e["fraction"] for e in events]
    assert fr == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.0])
    assert all(e["what"] == "job" and e["event"] == "batch" for e in events)
    progress.tick(1, 2)  # outside reporting: nothing, no error
    assert len(events) == 9 and not progress.active()


def test_attack_check_reports_batches_with_time_left(monkeypatch):
    from sturdynet.checks.base import CheckContext
    from sturdynet.cli import progress as cli_progress
    from sturdynet.core.registry import CHECKS
    from sturdynet.data import load_data
    from sturdynet.core.params import component
    from sturdynet.core.registry import DATASETS, MODELS
    from sturdynet.models.common import model_for_data
    from sturdynet.run.recipe import parse_check

    data = load_data(component(DATASETS, {"name": "digits", "subset": {"train": 100, "test": 80}}, "data"), 0)
    torch.manual_seed(0)
    model = model_for_data(component(MODELS, {"name": "small_cnn", "width": 4}, "model"), data).eval()
    events = []
    ctx = CheckContext(progress=events.append)
    spec = parse_check({"check": "pgd", "eps": [0.05, 0.1], "steps": 2, "samples": 80, "batch_size": 20,
                        "masking_checks": False}, "c")
    with progress.reporting(ctx.progress, "pgd", interval=0):
        CHECKS.create_from(spec.check, model, data, ctx)
    fr = [e["fraction"] for e in events]
    assert len(fr) >= 2 and fr == sorted(fr) and fr[-1] == pytest.approx(1.0) and fr[0] < 1
    # the display turns the fractions into a percentage and the time left
    monkeypatch.setattr(cli_progress, "PLAIN_EVERY", 0.0)
    out = io.StringIO()
    disp = cli_progress.ProgressDisplay(stream=out)
    disp({"event": "stage", "stage": "int4: pgd"})
    disp._stage_t0 -= 10  # pretend 10 s passed
    disp({"event": "batch", "fraction": 0.25, "what": "pgd", "done": 1, "total": 4})
    line = out.getvalue().splitlines()[-1]
    assert "int4: pgd: 25%" in line and "30 s left" in line
    assert cli_progress.fmt_left(3725) == "1 h 02 min left" and cli_progress.fmt_left(None) == ""


# ---- --json -------------------------------------------------------------------------------
def test_list_json(capsys):
    assert main(["list", "methods", "quant.uniform", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (entry,) = data["methods"]
    bits = next(p for p in entry["params"] if p["name"] == "bits")
    assert entry["name"] == "quant.uniform" and bits == {"name": "bits", "required": False, "default": 8}


def test_evaluate_json(tmp_path, capsys):
    ck = tmp_path / "m.pt"
    assert main(["-q", "train", recipe_file(tmp_path), "--set", "train.epochs=0", "--out", str(ck)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(ck), "-q", "--json", "--check", "clean",
                 "--check", "{check: pgd, eps: 8/255, steps: 1, samples: 20}"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["metrics"]) == {"clean", "pgd"} and data["metrics"]["pgd"]["eps"] == pytest.approx(8 / 255)
    assert 0 <= data["metrics"]["clean"]["accuracy"] <= 1
