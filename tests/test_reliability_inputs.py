"""Issue 14, bad inputs: names that become paths (1), NaN / inf pixels (3), labels (4), recipe
gaps (7), strict JSON (11), nearest-name hints (12). Each test failed before its fix."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sturdynet.cli import main
from sturdynet.core.atomic import dumps_strict, write_json_atomic
from sturdynet.core.names import first_line, safe_name
from sturdynet.core.params import Component, ConfigError, from_dict, load_yaml
from sturdynet.core.registry import CHECKS
from sturdynet.data import load_data
from sturdynet.data.base import DataParams, check_batch, make_bundle
from sturdynet.data.npz import NpzParams
from sturdynet.run.recipe import parse_recipe

BASE = {
    "name": "r", "seed": 0, "data": {"name": "digits", "subset": {"train": 200, "test": 40}},
    "model": {"name": "mlp"}, "train": {"epochs": 0},
    "variants": [{"name": "dense"}], "evaluate": [{"check": "clean"}],
}


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity, as RFC 8259 parsers do."""
    def refuse(tok):
        raise ValueError(f"non-standard JSON constant {tok}")
    return json.loads(text, parse_constant=refuse)


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


# -- 1: names become paths ------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../../X", "/tmp/abs", "a/b", "..", " ", "", "a\\b", ".hidden", "-rf",
                                 "x\x00y", "tab\tname", "a" * 101])
def test_unsafe_variant_and_recipe_names_refused(bad):
    r = dict(BASE, variants=[{"name": "dense"}, {"name": bad, "method": "quant.uniform", "bits": 8}])
    with pytest.raises(ConfigError, match=r"variants\[1\]\.name"):
        parse_recipe(r)
    with pytest.raises(ConfigError, match=r"^name: "):
        parse_recipe(dict(BASE, name=bad))


@pytest.mark.parametrize("good", ["dense", "pruned-90", "int4+fgsm", "lamp_90.v2", "at@8", "eps=0.1"])
def test_safe_names_accepted(good):
    assert safe_name(good, "name") == good


def test_recipe_name_with_dotdot_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("name: ../../escape\ndata: {name: digits}\nmodel: {name: mlp}\n"
                                     "variants: [dense]\nevaluate: [clean]\n")
    code, err = run_cli(["-q", "run", "r.yaml"], capsys)
    assert code == 2 and err.count("\n") == 1 and "name:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_resume_refuses_tampered_variant_name(tmp_path):
    from sturdynet.run.recipe import parse_recipe as parse
    from sturdynet.run.runner import Runner

    runner = Runner(parse(BASE), tmp_path)
    with pytest.raises(ConfigError, match="variant name"):
        runner.variant_path("../../outside", 0)


# -- 3: NaN / inf pixels --------------------------------------------------------------------
def _npz(tmp_path, **over):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.random((30, 4, 4, 1)).astype(np.float32), y_train=np.arange(30) % 3,
                  x_test=rng.random((9, 4, 4, 1)).astype(np.float32), y_test=np.arange(9) % 3)
    arrays.update(over)
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def _load_npz(path):
    return load_data(Component("npz", NpzParams(path=str(path), val_fraction=0.0)), 0)


@pytest.mark.parametrize("split, value, kind", [("test", np.nan, "NaN"), ("train", np.nan, "NaN"),
                                                ("test", np.inf, "infinite"), ("train", 1.5, "[0, 1]")])
def test_nonfinite_or_out_of_range_pixels_name_file_and_index(tmp_path, split, value, kind):
    x = np.random.default_rng(1).random((30 if split == "train" else 9, 4, 4, 1)).astype(np.float32)
    x[7, 1, 2, 0] = value
    p = _npz(tmp_path, **{f"x_{split}": x})
    with pytest.raises(ValueError) as e:
        _load_npz(p)
    msg = str(e.value)
    assert str(p) in msg and f"x_{split}[7]" in msg and kind in msg


def test_check_batch_offsets_index_for_streaming():
    x = torch.rand(5, 1, 2, 2)
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"shard\.npz: x_train\[103\] has a NaN"):
        check_batch(x, torch.zeros(5, dtype=torch.long), 3, "shard.npz: x_train", offset=100)
    with pytest.raises(ValueError, match="label 3 at index 102 is not in 0..2"):
        check_batch(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 3, 0, 0]), 3, "shard", offset=100)


# -- 4: labels ------------------------------------------------------------------------------
def test_one_huge_label_is_refused_not_a_1001_class_model(tmp_path):
    y = np.arange(30) % 3
    y[5] = 1000
    with pytest.raises(ValueError, match=r"class 3 .* no training images"):
        _load_npz(_npz(tmp_path, y_train=y))


def test_label_only_in_test_split_refused(tmp_path):
    y = np.arange(9) % 3
    y[4] = 3
    with pytest.raises(ValueError, match=r"label 3 at index 4 is not in 0\.\.2"):
        _load_npz(_npz(tmp_path, y_test=y))


def test_longer_class_names_list_refused(tmp_path):
    with pytest.raises(ValueError, match=r"class 3 \('d'\) has no training images"):
        _load_npz(_npz(tmp_path, class_names=np.array(["a", "b", "c", "d"])))


def test_labels_checked_in_make_bundle():
    x = torch.rand(6, 1, 2, 2)
    with pytest.raises(ValueError, match="class 1"):
        make_bundle("toy", x, torch.tensor([0, 0, 2, 2, 0, 2]), x, torch.tensor([0, 2, 0, 2, 0, 2]),
                    DataParams(val_fraction=0.0), 0)


# -- 7: recipe validation gaps --------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    ({"train": {"lr": float("inf")}}, "train.lr"),
    ({"train": {"lr": "inf"}}, "train.lr"),
    ({"train": {"lr": "nan"}}, "train.lr"),
    ({"evaluate": [{"check": "pgd", "eps": []}]}, "evaluate[0].eps"),
    ({"evaluate": [{"check": "pgd", "eps": 1e308}]}, "evaluate[0].eps"),
    ({"seed": 10 ** 30}, "seed"),
    ({"train": {"epochs": 10 ** 12}}, "train.epochs"),
    ({"evaluate": [{"check": "pgd", "steps": 10 ** 12}]}, "evaluate[0].steps"),
    ({"variants": [{"name": "   "}]}, "variants[0].name"),
    ({"name": "  "}, "name"),
    ({"evaluate": [{"check": "clean", "id": " "}]}, "evaluate[0].id"),
])
def test_recipe_gaps_name_the_field(change, field):
    with pytest.raises(ConfigError) as e:
        parse_recipe({**BASE, **change})
    assert e.value.path == field and "\n" not in str(e.value)


@pytest.mark.parametrize("raw, what", [
    (b"name: a\nseed: 1\nseed: 2\n", "duplicate key 'seed'"),
    (b"name: a\ntrain: {lr: 0.1, lr: 0.2}\n", "duplicate key 'lr'"),
    (b"name: caf\xe9\n", "not UTF-8"),
    (b"name: a\x00b\n", "NUL byte"),
])
def test_yaml_file_problems_are_one_line_naming_the_file(tmp_path, capsys, raw, what):
    p = tmp_path / "r.yaml"
    p.write_bytes(raw)
    with pytest.raises(ConfigError, match=what) as e:
        load_yaml(p)
    assert str(p) in str(e.value)
    code, err = run_cli(["-q", "run", str(p), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and what in err and "Traceback" not in err


# -- 11: strict JSON ------------------------------------------------------------------------
def test_results_json_is_strict_with_null_and_reason(tmp_path):
    p = write_json_atomic(tmp_path / "results.json",
                          {"variants": [{"metrics": {"clean": {"accuracy": float("nan")}}}], "x": float("-inf")})
    data = strict_loads(p.read_text())
    assert data["variants"][0]["metrics"]["clean"]["accuracy"] is None and data["x"] is None
    assert data["null_reasons"] == {"variants[0].metrics.clean.accuracy": "NaN", "x": "-inf"}


def test_null_reasons_survive_a_rewrite_and_drop_when_value_returns():
    first = strict_loads(dumps_strict({"a": float("nan"), "b": 1.0}))
    again = strict_loads(dumps_strict(dict(first, c=2.0)))
    assert again["null_reasons"] == {"a": "NaN"}
    fixed = strict_loads(dumps_strict(dict(first, a=0.5)))
    assert "null_reasons" not in fixed


# -- 12: nearest names ----------------------------------------------------------------------
def test_unknown_names_suggest_nearest_in_one_line():
    msg = CHECKS.unknown("pgdd")
    assert "did you mean" in msg and "pgd" in msg and "corruptions" not in msg
    far = CHECKS.unknown("zzzzzzzz")
    assert "known; `sturdynet list`" in far and "certify" not in far


def test_recipe_and_parameter_keys_suggest_nearest():
    with pytest.raises(ConfigError, match="did you mean variants"):
        parse_recipe({**BASE, "variant": []})
    from sturdynet.train.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key \(did you mean epochs"):
        from_dict(TrainConfig, {"epoch": 1}, "train")


def test_unknown_corruption_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean .*gaussian_noise") as e:
        parse_recipe({**BASE, "evaluate": [{"check": "corruptions", "corruptions": ["gausian_noise"]}]})
    assert "elastic" not in str(e.value)


def test_first_line_strips_ansi_and_extra_lines():
    assert first_line(RuntimeError("\x1b[31mbad\x1b[0m thing\nretry with weights_only=False")) == "bad thing"
