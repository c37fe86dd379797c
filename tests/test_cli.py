"""The command line: exit codes, one-line errors, subcommands."""
import json
import os
import subprocess
import sys

import pytest

from sturdynet.cli import main

TINY_YAML = """
name: cli-tiny
seed: 0
data: {name: digits, subset: {train: 300, test: 60}}
model: {name: small_cnn, width: 4}
train: {epochs: 1, batch_size: 64}
variants:
  - {name: dense}
  - {name: int4, method: quant.uniform, bits: 4}
evaluate:
  - {check: clean}
  - {check: pgd, eps: 0.1, steps: 2, samples: 30}
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,expected", [
    (TINY_YAML.replace("epochs: 1", "epoch: 1"), "train.epoch: unknown key"),
    (TINY_YAML.replace("bits: 4", "bits: 12"), "variants[1].bits: must be in [2, 8], got 12"),
    (TINY_YAML.replace("name: digits", "name: npz, path: /nonexistent/file.npz"), "/nonexistent/file.npz"),
])
def test_bad_recipe_exits_2_with_one_line(tmp_path, capsys, text, expected):
    if "npz" in text:
        pytest.importorskip("sturdynet.data.npz")
    code = main(["-q", "run", write(tmp_path, text), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_subprocess_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sturdynet", "run", write(tmp_path, "name: [x\n")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "not valid YAML" in r.stderr and "Traceback" not in r.stderr


def test_list(capsys):
    assert main(["list", "methods", "quant.*"]) == 0
    out = capsys.readouterr().out
    assert "quant.uniform" in out and "bits=8" in out and "prune." not in out


def test_train_then_evaluate(tmp_path, capsys):
    ck = tmp_path / "m.pt"
    assert main(["-q", "train", write(tmp_path, TINY_YAML), "--out", str(ck)]) == 0
    assert ck.exists()
    out_json = tmp_path / "metrics.json"
    assert main(["evaluate", str(ck), "--check", "clean", "--check", "{check: pgd, eps: [0.1, 0.2], steps: 2,"
                 " samples: 20}", "--out", str(out_json)]) == 0
    metrics = json.loads(out_json.read_text())["metrics"]
    assert set(metrics) == {"clean", "pgd"} and [c["eps"] for c in metrics["pgd"]["curve"]] == [0.1, 0.2]
    assert metrics["pgd"]["accuracy"] <= 1.0
    assert main(["evaluate", str(ck), "--check", "{check: pgd, eps: -1}"]) == 2
    printed = capsys.readouterr().out
    pgd = metrics["pgd"]
    assert f"pgd: accuracy {pgd['accuracy']:.4f}" in printed
    assert f"curve: eps=0.1: {pgd['curve'][0]['accuracy']:.4f}, eps=0.2: {pgd['curve'][1]['accuracy']:.4f}" in printed


def test_evaluate_prints_per_attack_and_flags():
    from sturdynet.cli.evaluate import describe

    m = {"accuracy": 0.25, "eps": 0.1, "samples": 4, "curve": [{"eps": 0.1, "accuracy": 0.25},
                                                              {"eps": 0.2, "accuracy": 0.0}],
         "per_attack": {"apgd-ce:true": {"accuracy": 0.75}, "square": {"accuracy": 0.25}},
         "flags": ["zero_gradients: gradient masking: 100% of samples"]}
    assert describe("robust", m).splitlines() == [
        "robust: accuracy 0.2500  eps=0.1  samples=4",
        "  curve: eps=0.1: 0.2500, eps=0.2: 0.0000",
        "  per attack: apgd-ce:true 0.7500, square 0.2500",
        "  ! zero_gradients: gradient masking: 100% of samples"]


def test_run_writes_report_and_resumes(tmp_path, capsys):
    pytest.importorskip("sturdynet.report", reason="report package")
    recipe = write(tmp_path, TINY_YAML)
    out = tmp_path / "run"
    assert main(["-q", "run", recipe, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "report:" in text and (out / "report.html").exists() and (out / "report.md").exists()
    assert main(["-q", "report", str(out)]) == 0
    assert main(["-q", "report", str(tmp_path)]) == 2


def test_cli_sets_a_passive_omp_wait_policy_unless_the_user_chose_one():
    import os
    import subprocess
    import sys

    code = "import os, sturdynet.cli; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr
