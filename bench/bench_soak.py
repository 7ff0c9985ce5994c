#!/usr/bin/env python3
"""Soak benchmark of the localizer node: 10,000 frames of a looped bag replay, clean, with 10 %
faults mixed in, and with map swaps under load (dsac_ros/ros/soak.py describes each run).

The bag: the tiny scene's mapping frames (RGB-D, 160 x 120) with the tests' cached tiny map, so
the run measures the node's robustness (memory, latency, drops, fault answers), not a map's
accuracy; pass --bag and --map for your own. Run with the workspace sourced:
    scripts/ros_env.sh .venv/bin/python bench/bench_soak.py [--frames 10000] [--rate-hz 30]
JSON goes to bench/results/soak.json, and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from dsac_ros.ros.soak import SoakOptions, run_soak, tiny_scene_bag

REPO = Path(__file__).resolve().parents[1]


def table(results: dict) -> str:
    lines = [f"{'run':<10}{'sent':>7}{'answered':>10}{'dropped':>9}{'good OK %':>11}{'5cm/5deg %':>12}"
             f"{'faults BAD_INPUT':>18}{'p50 ms':>8}{'p99 ms':>8}{'RSS growth MB':>15}{'alive':>7}"]
    for name, run in results["runs"].items():
        good = run["by_kind"].get("good", {})
        faults = [row for kind, row in run["by_kind"].items() if kind != "good"]
        fault_text = (f"{sum(r['bad_input_with_reason'] for r in faults)}/{sum(r['answered'] for r in faults)}"
                      if faults else "-")
        latency = run["latency_publish_to_status_ms"]
        growth = run["rss"].get("growth_mb")
        lines.append(f"{name:<10}{run['frames_sent']:>7}{run['frames_answered']:>10}{run['frames_unanswered']:>9}"
                     f"{good.get('pct_published', 0):>11.1f}{good.get('pct_within_5cm_5deg', 0):>12.1f}"
                     f"{fault_text:>18}{latency['p50'] or 0:>8.1f}{latency['p99'] or 0:>8.1f}"
                     f"{growth if growth is not None else float('nan'):>15.1f}{str(run['node_alive_at_end']):>7}")
    for name, run in results["runs"].items():
        if run.get("swaps"):
            s = run["swaps"]
            lines.append(f"{name}: {s['requested']} map swaps ({s['accepted']} accepted), {s['loading_statuses']} "
                         f"'loading map' statuses, {s['ok_with_unknown_map']} poses from an unknown map, "
                         f"{s['ok_map_path_changes']} changes of map in the OK statuses")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", type=Path, default=None, help="bag to loop (default: the tiny scene, written once)")
    parser.add_argument("--map", type=Path, default=None, help="map (default: the tests' cached tiny map)")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--swap-frames", type=int, default=2_000, help="frames of the map-swap run")
    parser.add_argument("--swap-every", type=int, default=200)
    parser.add_argument("--rate-hz", type=float, default=30.0)
    parser.add_argument("--runs", default="clean,faults,swap", help="comma-separated subset of clean,faults,swap")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    if args.map is None:
        from dsac_ros.benchmarks.tiny_map import build_tiny_map

        args.map = build_tiny_map()
    bag = args.bag or tiny_scene_bag(Path(tempfile.mkdtemp(prefix="soak_bag_")) / "tiny")
    base = SoakOptions(frames=args.frames, rate_hz=args.rate_hz)
    plans = {"clean": base, "faults": replace(base, fault_fraction=0.1),
             "swap": replace(base, frames=args.swap_frames, swap_every=args.swap_every)}
    results = {"machine": {"cpu_cores": os.cpu_count(), "load_average_1min_start": os.getloadavg()[0]},
               "bag": str(bag), "map": str(args.map), "runs": {}}
    for name in args.runs.split(","):
        started = time.perf_counter()
        run = run_soak(bag, args.map, plans[name], progress=lambda text: print(text, flush=True))
        run["wall_s"] = time.perf_counter() - started
        results["runs"][name] = run
        print(f"{name}: {run['frames_sent']} frames in {run['wall_s']:.0f} s", flush=True)
    results["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    print(f"JSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
