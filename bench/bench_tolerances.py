"""Audit of the test suite's numeric tolerances across thread counts and BLAS code paths.

    .venv/bin/python bench/bench_tolerances.py [--configs NAME ...] [--out bench/results/tolerances.json]

Runs the whole suite once per configuration (torch threads 1 and 2; OpenBLAS's CPU detection as
is and forced to Haswell; optionally torch kernels without AVX2), each with a fresh fixture cache
so the fitted test maps are re-made under that configuration too. Every tolerance check records
error / allowed (test/tolerances.py); the table lists, per check, the worst ratio over all runs
(1.0 = at the bound) and the configuration where it occurred. Run it through scripts/ros_env.sh
(or `make bench BENCH=tolerances`) so the ROS tests run as well.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "threads1": {"DSAC_ROS_TORCH_THREADS": "1"},
    "threads2": {"DSAC_ROS_TORCH_THREADS": "2"},
    "threads1-haswell": {"DSAC_ROS_TORCH_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"},
    "threads2-haswell": {"DSAC_ROS_TORCH_THREADS": "2", "OPENBLAS_CORETYPE": "Haswell"},
    # torch's kernels as on a CPU without AVX2 (another summation order in every reduction).
    "threads2-no-avx2": {"DSAC_ROS_TORCH_THREADS": "2", "ATEN_CPU_CAPABILITY": "default"},
}
DEFAULT_CONFIGS = ["threads1", "threads2", "threads1-haswell", "threads2-haswell"]


def run_config(name: str, pytest_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"dsac_tol_{name}_") as tmp:
        margins = Path(tmp) / "margins.jsonl"
        env = dict(os.environ, DSAC_ROS_MARGINS=str(margins), DSAC_ROS_CACHE=str(Path(tmp) / "cache"))
        env.pop("OPENBLAS_CORETYPE", None)
        env.update(CONFIGS[name])
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                                cwd=REPO, env=env, capture_output=True, text=True)
        summary = (result.stdout.strip().splitlines() or [""])[-1]
        rows = [json.loads(line) for line in margins.read_text().splitlines()] if margins.exists() else []
    return {"config": name, "env": CONFIGS[name], "exit_code": result.returncode, "summary": summary,
            "seconds": round(time.monotonic() - started, 1), "checks": rows,
            "failures": [line for line in result.stdout.splitlines() if line.startswith("FAILED")]}


def worst_per_check(runs: list[dict]) -> list[dict]:
    worst: dict[tuple[str, str], dict] = {}
    for run in runs:
        for row in run["checks"]:
            key = (row["test"], row["site"])
            entry = worst.setdefault(key, {"test": row["test"], "site": row["site"], "ratio": -1.0, "config": "",
                                           "per_config": {}})
            entry["per_config"][run["config"]] = max(entry["per_config"].get(run["config"], 0.0), row["ratio"])
            if row["ratio"] > entry["ratio"]:
                entry["ratio"], entry["config"] = row["ratio"], run["config"]
    return sorted(worst.values(), key=lambda entry: -entry["ratio"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=DEFAULT_CONFIGS)
    parser.add_argument("--top", type=int, default=40, help="rows of the printed table")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tolerances.json")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (default: the whole suite)")
    args = parser.parse_args()
    runs = []
    for name in args.configs:
        run = run_config(name, args.pytest_args)
        print(f"{name:18s} exit {run['exit_code']}  {run['summary']}  ({run['seconds']:.0f} s)", flush=True)
        for failure in run["failures"]:
            print(f"    {failure}")
        runs.append(run)
    worst = worst_per_check(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "configs": {run["config"]: {k: run[k] for k in ("env", "exit_code", "summary", "seconds", "failures")}
                    for run in runs},
        "checks": len(worst), "worst": worst}, indent=1) + "\n")
    print(f"\n{len(worst)} tolerance checks; worst ratio error / allowed over {len(runs)} configurations "
          f"(1.0 = at the bound):")
    print(f"{'ratio':>9}  {'config':18s} check")
    for entry in worst[:args.top]:
        test = entry["test"].split("::", 1)[-1]
        print(f"{entry['ratio']:9.3g}  {entry['config']:18s} {entry['site']}  [{test}]")
    print(f"(all rows: {args.out})")
    return 0 if all(run["exit_code"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
