"""Real images: dsac_ros beside SIFT + PoseLib on a real recording, in its release format (issue 30).

    dsac-ros bench real [--data ../shared/real/7scenes-redkitchen/seq-01]
                        [--mapping-frames 0-199,300-599,700-999] [--test-frames 200-299,600-699]
                        [--maps rgbd,rgb] [--classical-retrieve 10,all] [--ablation]

One run, one split, one machine:
  - dsac_ros: a map per mode (``rgbd``: depth + poses; ``rgb``: poses only) from the mapping
    frames, timed, then every test frame localised as an RGB query and as an RGB-D query, through
    the node's gate; every threshold, the median, time per frame, map size, published %, false
    positives and covariance consistency.
  - the classical baseline of ``bench classical`` (SIFT, 4,000 per frame, lifted with the registered
    depth; PoseLib LO-RANSAC), matched against the ``k`` mapping frames its vocabulary retrieves and,
    with ``all``, against every mapping frame.
  - ``--ablation``: what loses on real images, on the rgbd map (``dsac_ros.benchmarks.real_ablation``).
The data is read where it lies (never copied); without it the benchmark says so and exits 2.
JSON to bench/results/real.json, with the commit, date and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
# ../shared/real next to the checkout, or where DSAC_ROS_REAL_DATA points.
DEFAULT_DATA = Path(os.environ.get("DSAC_ROS_REAL_DATA", REPO_ROOT.parent / "shared" / "real")) / "7scenes-redkitchen" / "seq-01"
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "real.json"
MAPPING_FRAMES = "0-199,300-599,700-999"  # the split of ../shared/real/7scenes-redkitchen/README.md
TEST_FRAMES = "200-299,600-699"
SIFT_FEATURES = 4000
# The memory-map defaults before 480 px maps (main at 56d0752), for --baseline.
BASELINE_MAP_OPTIONS = {"input_height_px": 240, "encoder_path": None, "end_to_end": True}
METRIC_KEYS = ("pct_5cm_5deg", "pct_2cm_2deg", "pct_1cm_1deg", "median_translation_cm", "median_rotation_deg",
               "published_pct", "false_positives_25cm_10deg", "false_positives_5cm_5deg", "nees_median",
               "pct_inside_95_ellipsoid", "median_ms_total", "p95_ms_total")


def machine_record(threads: int) -> dict[str, Any]:
    """Commit, date, CPU model, cores, threads and load of this run."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"commit": commit + ("+changes" if dirty else ""), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "load_average_1min": os.getloadavg()[0]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a 7-Scenes sequence folder (default: %(default)s)")
    parser.add_argument("--mapping-frames", default=MAPPING_FRAMES, help="inclusive ranges (default: %(default)s)")
    parser.add_argument("--test-frames", default=TEST_FRAMES, help="inclusive ranges (default: %(default)s)")
    parser.add_argument("--maps", default="rgbd,rgb", help="dsac_ros map modes, comma-separated (default: %(default)s)")
    parser.add_argument("--map-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a MappingOptions field for every dsac_ros map, e.g. end_to_end=false (repeatable)")
    parser.add_argument("--classical-retrieve", default="10,all",
                        help="mapping frames the classical baseline matches: numbers and/or 'all' ('' skips it)")
    parser.add_argument("--classical-every", type=int, default=1, metavar="K",
                        help="the classical 'all' row localises every K-th test frame (its exhaustive matching "
                             "costs seconds per frame) (default: %(default)s)")
    parser.add_argument("--every", type=int, default=1, metavar="K", help="every K-th test frame (default: 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ablation", action="store_true", help="also the ablation table on the rgbd map")
    parser.add_argument("--baseline", action="store_true",
                        help="also an rgbd map with the defaults before 480 px maps (240 px, shipped encoder, a key "
                             "on every cell, end-to-end stage on), side by side in this run")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / ".cache" / "bench_real",
                        help="maps are written here (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (default: %(default)s)")


def parse_map_options(pairs: Sequence[str]) -> dict[str, Any]:
    """['end_to_end=false', 'input_height_px=360'] -> {'end_to_end': False, 'input_height_px': 360}."""
    parsed = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        lowered = text.strip().lower()
        value: Any
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        parsed[key.strip()] = value
    return parsed


def make_map(data: Path, frames: str, mode: str, out: Path, threads: int, **changes: Any) -> dict[str, Any]:
    """Map ``frames`` of ``data`` in ``mode`` into ``out``; returns its seconds, MB and training record."""
    from dsac_ros.data import RecordingOptions
    from dsac_ros.mapping import MappingOptions, map_recording

    out.parent.mkdir(parents=True, exist_ok=True)
    options = MappingOptions(mode=mode, device="cpu", progress=False, threads=threads, **changes)
    started = time.perf_counter()
    result = map_recording(data, out, options, recording=RecordingOptions(frames=frames), log=lambda message: None)
    seconds = time.perf_counter() - started
    stages = result.training.get("stages", {})
    return {"map_seconds": seconds, "map_mb": out.stat().st_size / 1e6,
            "keyframes": result.training.get("data", {}).get("keyframes"),
            "timings_s": result.training.get("timings_s"),
            "end_to_end": {k: stages[k] for k in stages if stages[k]} or None}


def dsac_metrics(map_path: Path, test: Sequence, use_depth: bool, threads: int, **localizer_options: Any
                 ) -> dict[str, Any]:
    """Localise every test frame through the node's gate; the metrics a user reads."""
    import torch

    from dsac_ros.evaluation import compute_metrics, evaluate_frames
    from dsac_ros.gate import GateSettings
    from dsac_ros.localizer import Localizer

    torch.set_num_threads(int(threads))
    localizer = Localizer(map_path, device="cpu", **localizer_options)
    records = evaluate_frames(localizer, test, use_depth=use_depth, progress=False, seed_from_stamp=True,
                              gate_settings=GateSettings())
    metrics = compute_metrics(records)
    return {key: metrics.get(key) for key in METRIC_KEYS}


def classical_rows(mapping: Sequence, test: Sequence, retrieve: Sequence[str], every_all: int) -> list[dict[str, Any]]:
    """SIFT + PoseLib with depth-lifted mapping keypoints, per retrieval setting."""
    from dsac_ros.benchmarks import classical
    from dsac_ros.evaluation import FrameRecord, compute_metrics

    started = time.perf_counter()
    built = classical.build_map(mapping, "rgbd", sift_features=SIFT_FEATURES)
    map_seconds = time.perf_counter() - started
    rows = []
    for setting in retrieve:
        exhaustive = setting == "all"
        k = len(mapping) if exhaustive else int(setting)
        frames = test[:: every_all] if exhaustive else test
        records = []
        for frame in frames:
            world_T_cam, info = classical.localize(built, frame.image_rgb, frame.intrinsics, retrieve=k,
                                                   sift_features=SIFT_FEATURES)
            records.append(FrameRecord(frame.stamp_ns, world_T_cam, frame.world_T_cam, {"total": info["ms"]["total"]},
                                       frame.name))
        metrics = compute_metrics(records)  # published = localized: PoseLib's inlier floor is its gate
        rows.append({"method": f"sift_poselib_retrieve_{setting}", "map": "rgbd", "query": "rgb",
                     "test_frames": len(frames), "map_seconds": map_seconds, "map_mb": built.size_bytes / 1e6,
                     **{key: metrics.get(key) for key in METRIC_KEYS}})
        print_row(rows[-1])
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_row(row: dict[str, Any]) -> None:
    print(f"{row['method']:<28}{row['map']:<5}{row['query']:<5} {_fmt(row['pct_5cm_5deg']):>5} % "
          f"{_fmt(row['pct_2cm_2deg']):>5} % {_fmt(row['pct_1cm_1deg']):>5} %  median "
          f"{_fmt(row['median_translation_cm'], 2)} cm {_fmt(row['median_rotation_deg'], 2)} deg  "
          f"published {_fmt(row['published_pct'])} %  FP {row['false_positives_25cm_10deg']}/"
          f"{row['false_positives_5cm_5deg']}  in95 {_fmt(row.get('pct_inside_95_ellipsoid'))} %  "
          f"{_fmt(row['median_ms_total'], 0)} ms (p95 {_fmt(row['p95_ms_total'], 0)})  "
          f"map {_fmt(row['map_mb'])} MB {_fmt(row['map_seconds'], 0)} s", flush=True)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as the docs' table (docs/real_data.md)."""
    lines = ["| method | map | query | 5 cm / 5 deg | 2 cm / 2 deg | 1 cm / 1 deg | median | published | FP > 25 cm / > 5 cm "
             "| inside 95 % ellipsoid | ms per frame (p95) | map | mapping s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['map']} | {row['query']} | {_fmt(row['pct_5cm_5deg'])} % | "
                     f"{_fmt(row['pct_2cm_2deg'])} % | {_fmt(row['pct_1cm_1deg'])} % | "
                     f"{_fmt(row['median_translation_cm'], 2)} cm / {_fmt(row['median_rotation_deg'], 2)} deg | "
                     f"{_fmt(row['published_pct'])} % | {row['false_positives_25cm_10deg']} / "
                     f"{row['false_positives_5cm_5deg']} | {_fmt(row.get('pct_inside_95_ellipsoid'))} % | "
                     f"{_fmt(row['median_ms_total'], 0)} ({_fmt(row['p95_ms_total'], 0)}) | {_fmt(row['map_mb'])} MB | "
                     f"{_fmt(row['map_seconds'], 0)} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import sys

    import cv2
    import faiss

    from dsac_ros.data import RecordingError, open_recording

    if not args.data.is_dir():
        print(f"dsac-ros bench real: no real recording at {args.data} (the project never holds one; see "
              "../shared/real/README.md)", file=sys.stderr)
        return 2
    cv2.setNumThreads(int(args.threads))
    faiss.omp_set_num_threads(int(args.threads))
    try:
        test = list(open_recording(args.data, frames=args.test_frames))[:: args.every]
    except RecordingError as error:
        print(f"dsac-ros bench real: {error}", file=sys.stderr)
        return 2
    print(f"{args.data}: {len(test)} test frames ({args.test_frames}, every {args.every}); mapping frames "
          f"{args.mapping_frames}", flush=True)
    print(f"{'method':<28}{'map':<5}{'query':<5} 5cm/5°  2cm/2°  1cm/1°", flush=True)
    map_changes = parse_map_options(args.map_option)
    rows: list[dict[str, Any]] = []
    map_paths = {}
    runs = [("dsac_ros", mode, f"real_{mode}.pt", map_changes) for mode in args.maps.split(",") if mode]
    if args.baseline:
        runs.append(("dsac_ros_240px_e2e", "rgbd", "real_rgbd_240px.pt", BASELINE_MAP_OPTIONS))
    for method, mode, name, changes in runs:
        path = args.work / name
        made = make_map(args.data, args.mapping_frames, mode, path, args.threads, **changes)
        if method == "dsac_ros":
            map_paths[mode] = path
        for query in ("rgb", "rgbd"):
            rows.append({"method": method, "map": mode, "query": query, "test_frames": len(test), **made,
                         **dsac_metrics(path, test, query == "rgbd", args.threads)})
            print_row(rows[-1])
    retrieve = [s.strip() for s in args.classical_retrieve.split(",") if s.strip()]
    if retrieve:
        mapping = list(open_recording(args.data, frames=args.mapping_frames))
        rows.extend(classical_rows(mapping, test, retrieve, args.classical_every))
    out: dict[str, Any] = {"benchmark": "real", "machine": machine_record(args.threads), "data": str(args.data),
                           "mapping_frames": args.mapping_frames, "test_frames": args.test_frames,
                           "every": args.every, "map_options": map_changes, "rows": rows}
    if args.ablation and "rgbd" in map_paths:
        from dsac_ros.benchmarks.real_ablation import ablation_rows

        out["ablation"] = ablation_rows(map_paths["rgbd"], test, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(markdown_table(rows))
    print(f"JSON: {args.out}")
    return 0
