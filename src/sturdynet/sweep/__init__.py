"""Running recipes: the runner and the resumable results store."""
from .runner import Runner, run_recipe
from .store import ResultsStore, write_json_atomic

__all__ = ["Runner", "ResultsStore", "run_recipe", "write_json_atomic"]
