"""Sweeps (issue 12): grid expansion, dry run, the SQLite store and its lock, executors agreeing,
kill -9 resume, retries, environment changes, uncertainty."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sturdynet.core.params import ConfigError
from sturdynet.core.stats import mean_std, overlap, wilson
from sturdynet.run.executor import make_executor, ray_available
from sturdynet.run.recipe import parse_recipe
from sturdynet.run.runner import Runner, plan, run_recipe
from sturdynet.run.store import ResultsStore, RunLocked
from sturdynet.run.uncertainty import aggregate_seeds, annotate_metrics

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLI = [sys.executable, "-c", "import sys; from sturdynet.cli import main; sys.exit(main())"]

# 12 grid cells (q: 6 bit widths x per_channel on/off) x 2 seeds = 24 cells; an MLP, 1 epoch, 200 images
GRID = {
    "name": "grid", "seed": 0,
    "data": {"name": "digits", "subset": {"train": 200, "test": 60}},
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.1},
    "variants": [{"name": "q", "method": "quant.uniform", "bits": 8}],
    "sweep": {"seeds": [0, 1], "grid": {"variants.q.bits": [2, 3, 4, 5, 6, 8],
                                        "variants.q.per_channel": [True, False]}},
    "evaluate": [{"check": "clean"}],
}


def _env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def _metrics(res):
    return {(c["name"], c["seed"]): c["metrics"] for c in res["cells"]}


# -- grid expansion ------------------------------------------------------------------------
def test_grid_expands_to_named_cells():
    r = parse_recipe(dict(GRID, variants=[{"name": "dense"}, *GRID["variants"]]))
    names = [v.name for v in r.all_variants]
    assert names[0] == "dense" and len(names) == 13
    assert "q@bits=4+per_channel=False" in names
    assert r.seeds == (0, 1) and len(r.cells()) == 26
    spec = next(v for v in r.all_variants if v.name == "q@bits=2+per_channel=True")
    assert spec.steps[0].kwargs()["bits"] == 2 and spec.steps[0].kwargs()["per_channel"] is True
    # the recipe round-trips with its sweep section
    assert [v.name for v in parse_recipe(r.to_dict()).all_variants] == names


def test_grid_on_two_variants_expands_each_independently():
    r = parse_recipe(dict(GRID, variants=[{"name": "p", "method": "prune.global_magnitude", "sparsity": 0.5},
                                          {"name": "q", "method": "quant.uniform", "bits": 8}],
                          sweep={"grid": {"variants.p.sparsity": [0.5, 0.8, 0.9, 0.95],
                                          "variants.q.bits": [8, 4, 2]}}))
    assert len(r.all_variants) == 7 and r.seeds == (0,)


@pytest.mark.parametrize("sweep, field", [
    ({"grid": {"variants.nope.bits": [2]}}, "sweep.grid.variants.nope.bits"),
    ({"grid": {"q.bits": [2]}}, "sweep.grid.q.bits"),
    ({"grid": {"variants.q.bits": []}}, "sweep.grid.variants.q.bits"),
    ({"grid": {"variants.q.bits": [99]}}, "bits"),
    ({"seeds": [0, 0]}, "sweep.seeds"),
    ({"seeds": [-1]}, "sweep.seeds[0]"),
    ({"trials": 3}, "sweep.trials"),
])
def test_bad_sweep_names_the_field(sweep, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("[", r"\[")):
        parse_recipe(dict(GRID, sweep=sweep))


def test_dry_run_prints_cells_and_count(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(GRID))
    out = subprocess.run([*CLI, "run", str(tmp_path / "r.json"), "--out",
                          str(tmp_path / "run"), "--dry-run"], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("24 cells (2 seeds x 12 variants): 24 to run, 0 done")
    assert len(lines) == 26 and "q@bits=2+per_channel=True" in lines[1]
    assert not (tmp_path / "run").exists()


# -- store, lock -----------------------------------------------------------------------------
def test_second_writer_is_refused(tmp_path):
    with ResultsStore(tmp_path):
        with pytest.raises(RunLocked, match="another sturdynet process"):
            ResultsStore(tmp_path)
    ResultsStore(tmp_path).close()  # released


def test_second_run_process_exits_2_with_one_line(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(GRID))
    with ResultsStore(tmp_path / "run"):  # a run in progress holds the folder
        out = subprocess.run([*CLI, "-q", "run", str(tmp_path / "r.json"),
                              "--out", str(tmp_path / "run")], capture_output=True, text=True, env=_env(),
                             timeout=120)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "another sturdynet process" in out.stderr


def test_environment_change_warns_and_records_both(tmp_path):
    env1 = {"threads": 1, "device": "cpu", "versions": {"torch": "2"}}
    env2 = {"threads": 2, "device": "cpu", "versions": {"torch": "2"}}
    with ResultsStore(tmp_path) as s:
        assert s.start({"name": "x"}, "k", env1) == []
    with ResultsStore(tmp_path) as s:
        warn = s.start({"name": "x"}, "k", env2)
        assert len(warn) == 1 and "threads" in warn[0] and "1 threads" in warn[0]
        v = s.view([], [0])
    assert [e["env"]["threads"] for e in v["environments"]] == [1, 2]


def test_old_results_json_is_imported(tmp_path):
    old = {"schema": 1, "name": "old", "seed": 3, "base_key": "k", "base": {"status": "ok"},
           "variants": [{"name": "dense", "status": "ok", "metrics": {"clean": {"accuracy": 0.5, "samples": 10}}}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    with ResultsStore(tmp_path) as s:
        assert s.cell("dense", 3)["metrics"]["clean"]["accuracy"] == 0.5
        with pytest.raises(ValueError, match="different recipe"):
            s.start({"name": "old"}, "other")


# -- uncertainty -------------------------------------------------------------------------------
def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(359, 359)
    assert hi == 1.0 and lo == pytest.approx(0.98942, abs=1e-4)
    assert mean_std([1, 2, 3])["std"] == pytest.approx(1.0)
    assert overlap([0.1, 0.2], [0.2, 0.3]) and not overlap([0.1, 0.2], [0.21, 0.3])


def test_intervals_in_metrics_and_across_seeds():
    m = annotate_metrics({"accuracy": 0.5, "samples": 10, "curve": [{"eps": 0.1, "accuracy": 0.5},
                                                                    {"eps": 0.2, "accuracy": 0.0}]})
    assert m["ci95"] == pytest.approx(list(wilson(5, 10)))
    assert m["curve"][1]["ci95"] == pytest.approx(list(wilson(0, 10)))
    fault = annotate_metrics({"kind": "fault", "accuracy": 0.4, "samples": 10,
                              "curve": [{"ber": 0.01, "accuracy": 0.4, "std": 0.1, "trials": 3}]})
    assert "ci95" not in fault and fault["accuracy_std"] == 0.1
    recs = {s: {"name": "v", "status": "ok", "metrics": {"clean": annotate_metrics({"accuracy": a, "samples": 100})}}
            for s, a in ((0, 0.8), (1, 0.9), (2, 0.85))}
    agg = aggregate_seeds(recs, [0, 1, 2])
    c = agg["metrics"]["clean"]
    assert c["accuracy"] == pytest.approx(0.85) and c["accuracy_std"] == pytest.approx(0.05)
    assert c["seed_accuracy"] == {"0": 0.8, "1": 0.9, "2": 0.85} and agg["seeds"] == [0, 1, 2]
    assert c["ci95"][0] < 0.85 - 0.05 and c["ci95"][1] > 0.85 + 0.05  # covers the t interval of the mean
    assert aggregate_seeds({0: recs[0]}, [0, 1])["status"] == "pending"


# -- executors agree, resume, retries ------------------------------------------------------------
@pytest.fixture(scope="module")
def inprocess_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc")
    runner = Runner(parse_recipe(GRID), out)
    res = runner.run()
    return out, res, runner


def test_sweep_in_process(inprocess_grid):
    out, res, runner = inprocess_grid
    assert len(res["cells"]) == 24 and len(runner.ran) == 24 and res["seeds"] == [0, 1]
    assert len(res["variants"]) == 12
    for v in res["variants"]:
        assert v["status"] == "ok" and v["seeds"] == [0, 1]
        c = v["metrics"]["clean"]
        assert set(c["seed_accuracy"]) == {"0", "1"} and c["ci95"][0] <= c["accuracy"] <= c["ci95"][1]
    assert (out / "seeds" / "1" / "base.safetensors").exists()
    assert (out / "seeds" / "0" / "variants" / "q@bits=3+per_channel=False.safetensors").exists()
    assert all(t == "skip" for _, t in plan(parse_recipe(GRID), out))
    # the store is the source of truth: results.json is its view
    db = sqlite3.connect(str(out / "results.sqlite"))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM cells WHERE status='ok'").fetchone()[0] == 24


@pytest.mark.slow
def test_pool_matches_in_process(inprocess_grid, tmp_path):
    _, ref, _ = inprocess_grid
    ex = make_executor("pool", workers=2)
    try:
        res = run_recipe(parse_recipe(GRID), tmp_path, executor=ex)
    finally:
        ex.shutdown()
    assert _metrics(res) == _metrics(ref)


@pytest.fixture(scope="module")
def local_ray():
    why = ray_available()
    if why:
        pytest.skip(why)
    import ray

    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_matches_in_process(inprocess_grid, local_ray, tmp_path):
    _, ref, _ = inprocess_grid
    ex = make_executor("ray")
    assert ex.workers == 2
    res = run_recipe(parse_recipe(GRID), tmp_path, executor=ex)
    assert _metrics(res) == _metrics(ref)


def _done_cells(folder: Path) -> int:
    db = folder / "results.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(str(db), timeout=5)
        return con.execute("SELECT COUNT(*) FROM cells WHERE status='ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_9_mid_sweep_then_resume(tmp_path, inprocess_grid):
    """The driver is killed with SIGKILL right after its third cell is committed (from its own
    progress hook, so the kill lands mid-sweep however fast the machine is); a re-run completes
    without redoing the finished cells and gives the in-process metrics."""
    _, ref, _ = inprocess_grid
    (tmp_path / "r.json").write_text(json.dumps(GRID))
    run_dir = tmp_path / "run"
    driver = (
        "import json, os, signal, sys\n"
        "from sturdynet.run.recipe import parse_recipe\n"
        "from sturdynet.run.runner import Runner\n"
        "seen = []\n"
        "def hook(ev):\n"
        "    if ev.get('event') == 'variant':\n"
        "        seen.append(ev)\n"
        "        if len(seen) == 3:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "Runner(parse_recipe(json.load(open(sys.argv[1]))), sys.argv[2], progress=hook).run()\n")
    proc = subprocess.run([sys.executable, "-c", driver, str(tmp_path / "r.json"), str(run_dir)], env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    done = _done_cells(run_dir)
    assert done == 3, done
    runner = Runner(parse_recipe(GRID), run_dir)  # the dead driver's lock is gone with it
    res = runner.run()
    assert len(runner.ran) == 24 - done
    assert all(c["status"] == "ok" for c in res["cells"]) and len(res["cells"]) == 24
    assert _metrics(res) == _metrics(ref)


def test_failed_cell_is_retried(tmp_path):
    bad = dict(GRID, retries=1, sweep={"seeds": [0]}, variants=[
        {"name": "explodes", "method": "prune.global_magnitude", "sparsity": 0.5, "finetune_epochs": 1,
         "finetune": {"lr": 1.0e30, "weight_decay": 0}}, {"name": "dense"}])
    runner = Runner(parse_recipe(bad), tmp_path)
    res = runner.run()
    by = {v["name"]: v for v in res["variants"]}
    assert by["explodes"]["status"] == "failed" and by["explodes"]["attempts"] == 2
    assert len(by["explodes"]["errors"]) == 2 and "TrainingDiverged" in by["explodes"]["errors"][0]
    assert by["dense"]["status"] == "ok" and by["dense"]["attempts"] == 1


# -- report: intervals, compare ------------------------------------------------------------------
def _fake_run(folder: Path, clean: float, pgd: float, n: int = 1000) -> Path:
    def m(acc):
        return annotate_metrics({"accuracy": acc, "samples": n})
    res = {"schema": 1, "name": folder.name, "seed": 0, "seeds": [0],
           "recipe": {"evaluate": [{"check": "clean"}, {"check": "pgd"}]},
           "variants": [{"name": "dense", "status": "ok", "method": None, "size_bytes": 4000,
                         "metrics": {"clean": m(0.95), "pgd": m(0.40)}},
                        {"name": "int4", "status": "ok", "method": "quant.uniform", "params": {"bits": 4},
                         "size_bytes": 600, "metrics": {"clean": m(clean), "pgd": m(pgd)}}]}
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(res))
    return folder


def test_compare_marks_only_non_overlapping_intervals(tmp_path):
    from sturdynet.cli import main
    from sturdynet.report.compare import compare_table, load_runs

    a = _fake_run(tmp_path / "a", clean=0.90, pgd=0.50)
    b = _fake_run(tmp_path / "b", clean=0.80, pgd=0.51)
    t = compare_table(load_runs([a, b]))
    assert [c.title for c in t.columns] == ["Variant", "Method", "Clean (a)", "Robust (a)", "Clean (b)", "Robust (b)"]
    int4 = dict(zip([c.title for c in t.columns], t.rows[1]))
    assert int4["Clean (b)"].text.startswith("▼ 80.0% [77.4, 82.4]") and int4["Clean (b)"].cls == "danger"
    assert not int4["Robust (b)"].text.startswith(("▲", "▼"))  # 50 % vs 51 % on 1000 samples: overlap
    dense = dict(zip([c.title for c in t.columns], t.rows[0]))
    assert not any(c.text.startswith(("▲", "▼")) for c in dense.values())
    assert main(["-q", "compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.html").exists() and (tmp_path / "cmp" / "plots" / "compare_frontier.png").exists()
    assert "▼" in (tmp_path / "cmp" / "compare.md").read_text()


def test_report_shows_intervals_and_seed_spread(inprocess_grid):
    from sturdynet.report import render_report

    out, _, _ = inprocess_grid
    render_report(out)
    md = (out / "report.md").read_text()
    assert "**Seeds** | 0, 1" in md and "95 % interval" in md and "Not run yet" not in md
    row = next(line for line in md.splitlines() if line.startswith("| **q@bits=8+per_channel=True**"))
    assert "±" in row and "\\[" in row  # mean ± std over seeds [interval]
    assert "seed_accuracy.1" in md


def test_check_naming_another_variant_gets_its_model(tmp_path):
    """A transfer check with a compressed surrogate: the surrogate is built first, every cell of
    the same seed (the surrogate's own included) gets its model."""
    r = dict(GRID, sweep={"seeds": [0], "grid": {"variants.q.bits": [4, 8]}},
             variants=[{"name": "dense"}, {"name": "q", "method": "quant.uniform", "bits": 8},
                       {"name": "src", "method": "prune.global_magnitude", "sparsity": 0.5}],
             evaluate=[{"check": "clean"}, {"check": "transfer", "surrogate": "src", "attack": "fgsm", "eps": 0.1,
                                            "samples": 30}])
    res = run_recipe(parse_recipe(r), tmp_path)
    assert [v["name"] for v in res["variants"]] == ["dense", "q@bits=4", "q@bits=8", "src"]
    for v in res["variants"]:
        assert v["status"] == "ok", v.get("error")
        assert v["metrics"]["transfer"]["surrogate"] == "src"
    assert res["variants"][3]["metrics"]["transfer"]["same_model"] is True


def test_resume_on_other_thread_count_warns_and_records_both(tmp_path):
    import torch

    one = dict(GRID, sweep={"seeds": [0], "grid": {"variants.q.bits": [8]}})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run_recipe(parse_recipe(one), tmp_path)
        torch.set_num_threads(2)
        events = []
        res = run_recipe(parse_recipe(one), tmp_path, progress=events.append)
    finally:
        torch.set_num_threads(before)
    warns = [e["text"] for e in events if e["event"] == "warning"]
    assert len(warns) == 1 and "threads" in warns[0]
    assert [e["env"]["threads"] for e in res["environments"]] == [1, 2]
    assert res["variants"][0]["env"] == 0  # the cell ran (and was kept) under the first environment


def test_small_sweep_same_on_ray(tmp_path, local_ray):
    """The quick version of the slow 24-cell tests: 2 cells in-process and on the local 2-CPU Ray
    (the pool is covered by the slow test only: its spawned workers take ~20 s to import here)."""
    small = parse_recipe(dict(GRID, sweep={"seeds": [0], "grid": {"variants.q.bits": [2, 8]}}))
    ref = run_recipe(small, tmp_path / "inproc")
    for kind in ("ray",):
        ex = make_executor(kind, workers=2)
        try:
            res = run_recipe(small, tmp_path / kind, executor=ex)
        finally:
            ex.shutdown()
        assert [v["metrics"] for v in res["variants"]] == [v["metrics"] for v in ref["variants"]], kind


def test_workers_get_a_recipe_they_can_unpickle_and_parse():
    """Check parameter classes made at run time (pgd) do not pickle and training callbacks do not
    round-trip through to_dict: pool workers get the source mapping, which gives the same recipe."""
    import pickle

    from sturdynet.run.runner import portable_recipe

    raw = dict(GRID, train=dict(GRID["train"], callbacks=[{"name": "sign_flips"}]),
               evaluate=[{"check": "clean"}, {"check": "pgd", "eps": 0.1, "steps": 2}])
    r = parse_recipe(raw)
    port = portable_recipe(r)
    assert isinstance(port, dict) and parse_recipe(pickle.loads(pickle.dumps(port))) == r
