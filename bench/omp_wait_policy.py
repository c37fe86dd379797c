"""The default ``sturdynet run`` beside one busy process, with and without OMP_WAIT_POLICY=PASSIVE
(issue 18 part 6).

torch's OpenMP worker threads spin while they wait for work; on a machine whose cores are
taken by other processes the spinning threads steal the time the working thread needs. The
script starts one busy process (a pure-Python loop, one core), then runs the default recipe
with torch's default thread count (``OMP_NUM_THREADS`` unset) and ``OMP_WAIT_POLICY`` unset
(libgomp's default: spin, then sleep) and set to ``PASSIVE``, alternating, and records each
run's wall seconds and CPU seconds (user + system of the run's process tree).

    python bench/omp_wait_policy.py --rounds 1 --out bench/results/omp_wait_policy.json

``--quick`` runs a reduced default recipe instead (same data, model and variant kinds; 3
training epochs, dense / int8 / binary with 2 QAT epochs, clean + PGD-5 only), for a machine
so loaded that two full default runs do not fit the time at hand.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


QUICK = """name: digits-default-quick
seed: 0
data: {name: digits}
model: {name: small_cnn, width: 16}
train: {epochs: 3, batch_size: 64, lr: 0.05, warmup_epochs: 1}
variants:
  - {name: dense}
  - {name: int8, method: quant.uniform, bits: 8}
  - {name: binary, method: binarize, epochs: 2}
evaluate:
  - {check: clean}
  - {check: pgd, eps: 0.1, steps: 5}
"""


def run_once(policy: str, workdir: Path, recipe: list) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    out = workdir / f"run-{policy}-{time.time_ns()}"
    # torch is imported before the CLI, so libgomp starts with exactly the policy given here
    # (the CLI's own default only applies when it is imported first)
    code = ("import sys, torch; from sturdynet.cli import main; "
            f"sys.exit(main(['run', *{recipe!r}, '--out', {str(out)!r}, '-q']))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"sturdynet run failed ({policy}): {r.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"policy": policy, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "loadavg_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="pairs of runs (order alternates)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="a reduced default recipe (see the docstring)")
    args = ap.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            recipe = []
            if args.quick:
                (Path(tmp) / "quick.yaml").write_text(QUICK)
                recipe = [str(Path(tmp) / "quick.yaml")]
            for r in range(args.rounds):
                order = ["unset", "PASSIVE"] if r % 2 == 0 else ["PASSIVE", "unset"]
                for policy in order:
                    row = run_once(policy, Path(tmp), recipe)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        busy.kill()
        busy.wait()
    wall = {p: [r["wall_s"] for r in rows if r["policy"] == p] for p in ("unset", "PASSIVE")}
    summary = {"event": "omp_wait_policy", "runs": rows, "cores": os.cpu_count(),
               "mean_wall_s": {p: round(sum(v) / len(v), 1) for p, v in wall.items()},
               "speedup_passive": round((sum(wall["unset"]) / len(wall["unset"]))
                                        / (sum(wall["PASSIVE"]) / len(wall["PASSIVE"])), 2),
               "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores shared with other jobs (loaded)",
               "recipe": "quick (see QUICK)" if args.quick else "default",
               "command": f"nice -n 10 python bench/omp_wait_policy.py --rounds {args.rounds}"
                          + (" --quick" if args.quick else "")}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
