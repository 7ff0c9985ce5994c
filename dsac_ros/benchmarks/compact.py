"""Map size benchmark (issue 14): dense memory maps (every cell of every frame, format 1) against
compact ones (keyframes + product-quantised keys, format 2), side by side in one run.

For each scene x mode x variant: map the cached 640 x 480 mapping folder (``mapping.prepare_scene``;
``small_room_long@1000`` is the long recording's first 1,000 frames), then evaluate on the scene's
test walk. Mapping and localisation each run in a fresh process, so their peak RSS (``ru_maxrss``)
is their own. Columns: map MB, keyframes, mapping s, peak RSS, % within 5 cm / 5 deg and
2 cm / 2 deg, median error, per-frame ms. JSON to bench/results/compact.json.

    dsac-ros bench compact [--scenes small_room,large_room,small_room_long,small_room_long@1000]
                           [--modes rgbd,rgb] [--variants dense,compact]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "compact.json"
VARIANTS = ("dense", "compact")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenes", default="small_room,large_room,small_room_long,small_room_long@1000",
                        help="comma-separated scenes; NAME@N maps only the first N frames")
    parser.add_argument("--modes", default="rgbd,rgb", help="comma-separated mapping modes")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="dense: every frame, float16 keys (format 1, the baseline); compact: the defaults")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default: 2)")
    parser.add_argument("--test-every", type=int, default=1, metavar="K", help="evaluate every K-th test frame")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})")
    parser.add_argument("--maps-dir", type=Path, default=None, help="keep the maps here (default: a temporary dir)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one measurement (a child process)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _work(job: dict[str, Any]) -> dict[str, Any]:
    """One child's measurement: map (job["step"] == "map") or evaluate a map."""
    import torch

    torch.set_num_threads(int(job["threads"]))
    if job["step"] == "map":
        from dsac_ros.data import open_recording
        from dsac_ros.mapping import KeyframeOptions, MappingOptions, MemoryOptions, map_recording

        memory = MemoryOptions() if job["variant"] == "compact" else \
            MemoryOptions(keyframes=KeyframeOptions(enabled=False), subquantizers=None)
        options = MappingOptions(mode=job["mode"], end_to_end=False, memory=memory, threads=int(job["threads"]),
                                 progress=False)
        frames: Any = job["mapping_dir"]
        if job.get("frames"):
            frames = itertools.islice(open_recording(job["mapping_dir"]), int(job["frames"]))
        start = time.perf_counter()
        result = map_recording(frames, job["map"], options)
        data = result.training.get("data", {})
        return {"mapping_s": round(time.perf_counter() - start, 1), "mapping_peak_rss_mb": round(_peak_rss_mb()),
                "frames_read": data.get("frames_read"), "mapping_frames": data.get("mapping_frames"),
                "keyframes": data.get("keyframes"), "timings_s": result.training.get("timings_s")}
    from dsac_ros.benchmarks.mapping import evaluate_map
    from dsac_ros.mapfile import map_size_report

    metrics = evaluate_map(Path(job["map"]), Path(job["test_dir"]), "cpu", int(job["test_every"]), False)
    return {"metrics": metrics, "size": map_size_report(job["map"]), "localize_peak_rss_mb": round(_peak_rss_mb())}


def _child(job: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "dsac_ros.benchmarks.compact", "--worker", json.dumps(job)],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(job["threads"])))
    if done.returncode != 0:
        raise RuntimeError(f"benchmark step {job['step']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'scene':<21} {'mode':<5} {'variant':<8} {'map MB':>7} {'biggest':<9} {'frames':>11} {'map s':>6} "
              f"{'map RSS':>8} {'loc RSS':>8} {'5cm/5d %':>8} {'2cm/2d %':>8} {'med cm':>7} {'med deg':>7} {'ms':>5}")
    lines = [header, "-" * len(header)]
    for r in rows:
        m, size = r["metrics"], r["size"]
        kept = f"{r['mapping_frames']}/{r['frames_read']}"
        lines.append(f"{r['scene']:<21} {r['mode']:<5} {r['variant']:<8} {size['file_mb']:7.1f} {size['dominant'][:9]:<9} "
                     f"{kept:>11} {r['mapping_s']:6.0f} {r['mapping_peak_rss_mb']:8.0f} {r['localize_peak_rss_mb']:8.0f} "
                     f"{m['pct_5cm_5deg']:8.1f} {m['pct_2cm_2deg']:8.1f} {m['median_translation_cm']:7.2f} "
                     f"{m['median_rotation_deg']:7.2f} {m['median_ms_total']:5.0f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.worker:
        print(json.dumps(_work(json.loads(args.worker)), default=str))
        return 0
    from dsac_ros.benchmarks.mapping import prepare_scene

    maps_dir = Path(args.maps_dir) if args.maps_dir else Path(tempfile.mkdtemp(prefix="dsac_ros_bench_compact_"))
    maps_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for scene in [s.strip() for s in args.scenes.split(",") if s.strip()]:
        name, _, count = scene.partition("@")
        mapping_dir, test_dir, _ = prepare_scene(name)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
                out = maps_dir / f"{name}{'_' + count if count else ''}_{mode}_{variant}.pt"
                job = {"mapping_dir": str(mapping_dir), "test_dir": str(test_dir), "frames": int(count) if count else None,
                       "mode": mode, "variant": variant, "map": str(out), "threads": args.threads,
                       "test_every": args.test_every}
                print(f"== {scene} {mode} {variant}", file=sys.stderr, flush=True)
                row = {"scene": scene, "mode": mode, "variant": variant}
                row.update(_child(dict(job, step="map")))
                row.update(_child(dict(job, step="evaluate")))
                rows.append(row)
                print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"benchmark": "compact", "threads": args.threads,
                                                "load_average": os.getloadavg(), "rows": rows}, indent=2, default=str))
                if not args.maps_dir:
                    out.unlink(missing_ok=True)
    print(format_table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
