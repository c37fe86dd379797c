"""Every recipe shipped in recipes/ (and the built-in default) loads and validates."""
from __future__ import annotations

from pathlib import Path

import pytest

from sturdynet.run.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_recipes_folder_is_not_empty():
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.variants and recipe.evaluate


def test_default_recipe_validates():
    assert load_recipe().variants
