#!/usr/bin/env python3
"""`make demo`: render the standard small room, map it, replay its test sequence through the
ROS localizer node (live evaluation), report.

Each step runs the `dsac-ros` command a user would type, prints it, and prints its wall time.
Products go to out/demo/ and are reused on a second run (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENE = "small_room"
MAPPING_BUDGET_MIN = 10.0


def run_step(title: str, command: list[str], products: list[Path], timings: list) -> None:
    print(f"\n== {title}\n$ {' '.join(shlex.quote(part) for part in command)}", flush=True)
    start = time.monotonic()
    if products and all(p.exists() for p in products):
        print(f"   reusing {', '.join(str(p.relative_to(REPO)) for p in products)}")
    else:
        subprocess.run(command, cwd=REPO, check=True)
    elapsed = time.monotonic() - start
    timings.append((title, elapsed))
    print(f"   [{elapsed:.1f} s]", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo")
    parser.add_argument("--minutes", type=float, default=MAPPING_BUDGET_MIN,
                        help=f"mapping budget in minutes (default {MAPPING_BUDGET_MIN:g}, at most 10)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "dsac_ros.cli"]
    timings: list[tuple[str, float]] = []
    total_start = time.monotonic()

    mapping_bag, test_bag = out / f"{SCENE}_mapping", out / f"{SCENE}_test"
    map_path, report = out / f"{SCENE}.pt", out / "report"
    run_step(f"render the {SCENE} mapping sequence (rosbag2, MCAP)",
             cli + ["synth", SCENE, "--split", "mapping", "--out", str(mapping_bag)], [mapping_bag], timings)
    run_step(f"render the {SCENE} test sequence (rosbag2, MCAP)",
             cli + ["synth", SCENE, "--split", "test", "--out", str(test_bag)], [test_bag], timings)
    print(f"\nmapping budget: {args.minutes:g} minutes on {os.cpu_count()} CPU cores")
    run_step("map the scene (train the scene model)",
             cli + ["map", str(mapping_bag), "--out", str(map_path), "--minutes", f"{args.minutes:g}"],
             [map_path], timings)
    run_step("replay the test sequence through the localizer node and write the report",
             cli + ["evaluate-live", str(test_bag), "--map", str(map_path), "--report", str(report)], [], timings)

    metrics = json.loads((report / "metrics.json").read_text())
    print("\n== result")
    for key in ("frames", "pct_5cm_5deg", "pct_2cm_2deg", "pct_1cm_1deg", "median_translation_cm",
                "median_rotation_deg", "median_ms_total", "p95_ms_total", "frames_dropped",
                "median_ms_latency", "p95_ms_latency"):
        if key in metrics:
            print(f"   {key:24s} {metrics[key]}")
    print(f"   report and plots: {report.relative_to(REPO)}/")
    print("\n== wall time per step")
    for title, seconds in timings:
        print(f"   {seconds:8.1f} s  {title}")
    print(f"   {time.monotonic() - total_start:8.1f} s  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
