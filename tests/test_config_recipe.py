import dataclasses

import pytest

from sturdynet.core.params import ConfigError
from sturdynet.run.recipe import load_recipe, parse_recipe


def base(**over):
    r = {"name": "t", "seed": 0, "data": {"name": "digits"}, "model": {"name": "small_cnn"},
         "train": {"epochs": 1}, "variants": [{"name": "dense"}], "evaluate": [{"check": "clean"}]}
    r.update(over)
    return r


def err(recipe):
    with pytest.raises(ConfigError) as e:
        parse_recipe(recipe)
    return str(e.value)


def test_default_recipe_loads():
    r = load_recipe()
    assert r.data.name == "digits"
    assert [v.name for v in r.variants][:3] == ["dense", "pruned-90", "int4"]
    pruned = r.variants[1]
    assert pruned.method == "prune.global_magnitude" and pruned.steps[0].params.sparsity == 0.9
    assert pruned.finetune.epochs == 3 and pruned.finetune.lr == pytest.approx(r.train.lr / 10)


def test_out_of_range_names_field_path():
    msg = err(base(variants=[{"name": "a"}, {"name": "b"}, {"name": "p", "method": "prune.global_magnitude",
                                                            "sparsity": 1.5}]))
    assert msg == "variants[2].sparsity: must be in [0, 1), got 1.5"


@pytest.mark.parametrize("recipe,expected", [
    (base(trian={}), "trian: unknown key"),
    (base(train={"epochs": "ten"}), "train.epochs: must be an integer, got 'ten'"),
    (base(train={"lr": 0}), "train.lr: must be > 0, got 0"),
    (base(data={"name": "nope"}), "data.name: unknown data set 'nope'"),
    (base(model={"name": "small_cnn", "widht": 3}), "model.widht: unknown key"),
    (base(variants=[{"name": "q", "method": "quant.uniform", "bits": 1}]), "variants[0].bits: must be in [2, 8], got 1"),
    (base(variants=[{"name": "q", "method": "quant.nope"}]), "variants[0].method: unknown compression method"),
    (base(variants=[{"name": "a"}, {"name": "a"}]), "variants[1].name: duplicate variant name"),
    (base(evaluate=[{"check": "pgd", "eps": [0.1, -1]}]), "evaluate[0].eps: must be >= 0, got -1"),
    (base(evaluate=[{"check": "pgd"}, {"check": "pgd"}]), "evaluate[1].id: duplicate check id"),
    (base(train={"optimizer": "rmsprop"}), "train.optimizer: must be one of sgd, adam"),
    (base(variants=[{"name": "d", "sparsity": 0.5}]), "variants[0].sparsity: unknown key"),
    (base(variants=[]), "variants: must be a non-empty list"),
    (base(train={"adversarial": {"method": "nope"}}), "train.adversarial.method: unknown adversarial training method"),
])
def test_bad_values_one_line(recipe, expected):
    msg = err(recipe)
    assert msg.startswith(expected), msg
    assert "\n" not in msg


def test_eps_list_and_steps_form():
    r = parse_recipe(base(
        variants=[{"name": "pq", "steps": [{"method": "prune.global_magnitude", "sparsity": 0.5},
                                          {"method": "quant.uniform", "bits": 4}]}],
        evaluate=[{"check": "pgd", "eps": [0.1, 0.2]}, {"check": "pgd", "id": "pgd-l2", "norm": "l2", "eps": 1.0}]))
    assert r.variants[0].method == "prune.global_magnitude+quant.uniform"
    assert r.evaluate[0].check.params.eps == (0.1, 0.2)
    assert r.evaluate[1].id == "pgd-l2" and r.evaluate[1].check.params.norm == "l2"
    # frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.train.epochs = 3  # type: ignore[misc]


def test_round_trip_to_dict():
    r = load_recipe()
    again = parse_recipe(r.to_dict())
    assert again == r


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(p)


def test_recipe_with_training_callbacks_and_adversarial_round_trips():
    """Recipe.to_dict() parses back to the same recipe (results.json's recipe is rerunnable)."""
    from sturdynet.run.recipe import parse_recipe

    data = {"name": "rt", "seed": 1, "data": {"name": "digits"}, "model": {"name": "mlp"},
            "train": {"epochs": 1, "adversarial": {"method": "pgd", "eps": 0.1},
                      "callbacks": [{"name": "gaussian_augment", "sigma": 0.25}]},
            "variants": [{"name": "dense"}, {"name": "ft", "method": "prune.global_magnitude", "sparsity": 0.5,
                                             "finetune_epochs": 1, "finetune": {"lr": 0.01}}],
            "evaluate": [{"check": "clean"}]}
    recipe = parse_recipe(data)
    out = recipe.to_dict()
    assert out["train"]["adversarial"]["method"] == "pgd"
    assert out["train"]["callbacks"][0]["name"] == "gaussian_augment" and "params" not in out["train"]["callbacks"][0]
    assert parse_recipe(out) == recipe
