"""rgb maps' coordinates against the renderer's truth (issue 15): the plane sweep (the default)
against triangulated matches, cell by cell, on the standard scenes.

For each scene the mapping bag is mapped three times with dense memories (every cell of every
mapping frame, so cells line up): rgbd (the truth: each cell's rendered depth at its centre, lifted
with the pose), rgb by sweep and rgb by matches. Per method: the share of cells with a coordinate,
the share of all cells within 5 cm and 2 cm of the truth, the median error of the known ones, and
the mapping time. JSON to bench/results/triangulation.json.

    dsac-ros bench triangulation [--scenes small_room,large_room] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "triangulation.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenes", default="small_room,large_room", help="comma-separated standard scenes")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default: 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})")


def _dense_map(frames, mode: str, triangulation: str, out: Path):
    from dsac_ros.mapping import KeyframeOptions, MappingOptions, MemoryOptions, map_recording

    memory = MemoryOptions(keyframes=KeyframeOptions(enabled=False), subquantizers=None, triangulation=triangulation)
    options = MappingOptions(mode=mode, end_to_end=False, progress=False, device="cpu", memory=memory)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = map_recording(frames, out, options, log=lambda message: None)
    return result.network, time.perf_counter() - started


def _world(network):
    """(F, M, 3) the memory's coordinates in the world frame (values are offsets from the centre)."""
    return network.head.values.detach().double() + network.scene_center_m.double().view(1, 1, 3)


def run(args: argparse.Namespace) -> int:
    import torch

    from dsac_ros.benchmarks.cameras import scene_bags
    from dsac_ros.data import read_frames

    torch.set_num_threads(int(args.threads))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dsac_ros_bench_triangulation_") as work:
        for scene in [s.strip() for s in args.scenes.split(",") if s.strip()]:
            frames = list(read_frames(scene_bags(scene)["mapping"]))
            truth, _ = _dense_map(frames, "rgbd", "sweep", Path(work) / f"{scene}_rgbd.pt")
            truth_world, truth_valid = _world(truth), truth.head.valid
            for method in ("sweep", "matches"):
                network, seconds = _dense_map(frames, "rgb", method, Path(work) / f"{scene}_{method}.pt")
                known = network.head.valid & truth_valid
                error_m = (_world(network) - truth_world).norm(dim=-1)[known]
                cells = int(truth_valid.sum())
                row = {"scene": scene, "method": method, "mapping_frames": len(frames), "cells": cells,
                       "known_pct": 100.0 * float(network.head.valid.float().mean()),
                       "within_5cm_pct": 100.0 * float((error_m < 0.05).sum()) / cells,
                       "within_2cm_pct": 100.0 * float((error_m < 0.02).sum()) / cells,
                       "median_error_cm": 100.0 * float(error_m.median()) if len(error_m) else None,
                       "map_seconds": seconds}
                rows.append(row)
                print(format_table([row]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "triangulation", "threads": args.threads,
                                    "load_average_1min_end": os.getloadavg()[0], "rows": rows}, indent=2) + "\n")
    print(format_table(rows))
    print(f"JSON: {args.out}")
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scene | method | cells with a coordinate | within 5 cm | within 2 cm | median error | map s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        median = "-" if row["median_error_cm"] is None else f"{row['median_error_cm']:.1f} cm"
        lines.append(f"| {row['scene']} | {row['method']} | {row['known_pct']:.1f} % | {row['within_5cm_pct']:.1f} % | "
                     f"{row['within_2cm_pct']:.1f} % | {median} | {row['map_seconds']:.0f} |")
    return "\n".join(lines)
