"""Running recipes: the recipe, the runner, the resumable results store, checkpoints."""
from .runner import Runner, run_recipe
from .store import ResultsStore

__all__ = ["Runner", "ResultsStore", "run_recipe"]
