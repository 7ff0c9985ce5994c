"""Mapping benchmark (issue 6): map the standard scenes on a wall-clock budget, evaluate on their test sequences.

For each scene x mode (rgbd, rgb) x end-to-end (off, on): ``map_recording`` on the scene's
mapping sequence (rendered once at 640 x 480 into a cached folder; rendering is not mapping time),
then ``Localizer`` + ``evaluation`` on the test sequence (RGB only, 64 hypotheses, tau 10 px).
Writes rows to JSON (default bench/results/mapping.json) and prints one table; also reports where
mapping time went (read, encoder, head steps, end-to-end steps, validation, ...).

    dsac-ros bench mapping [--minutes 10] [--scenes small_room,large_room] [--modes rgbd,rgb]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from dsac_ros.mapping.options import MappingOptions, default_of

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "mapping.json"


def _cache_dir() -> Path:
    return Path(os.environ.get("DSAC_ROS_CACHE", REPO_ROOT / ".cache"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=default_of(MappingOptions, "minutes"),
                        help="mapping budget per run (default: %(default)g)")
    parser.add_argument("--scenes", default="small_room,large_room", help="comma-separated standard scenes")
    parser.add_argument("--modes", default="rgbd,rgb", help="comma-separated mapping modes (rgbd, rgb)")
    parser.add_argument("--end-to-end", dest="e2e", default="off,on",
                        help="end-to-end stage settings to run: off, on or off,on (default: off,on)")
    parser.add_argument("--encoder", default=None, metavar="PATH", help="encoder file (default: the shipped one)")
    parser.add_argument("--network", default=None,
                        help="comma-separated head architectures (memory, fast, ace; default: mapping's)")
    parser.add_argument("--passes", type=int, default=None, help="buffer views per frame (default: mapping's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch CPU threads (default: PyTorch's; 1 is faster on a loaded, shared machine)")
    parser.add_argument("--test-every", type=int, default=1, metavar="K", help="evaluate every K-th test frame")
    parser.add_argument("--device", default="cpu", help="device for mapping and localisation (default: cpu)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})")
    parser.add_argument("--maps-dir", type=Path, default=None, help="keep the maps here (default: a temporary dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def prepare_scene(name: str, log=print) -> tuple[Path, Path, dict[str, float]]:
    """Mapping and test folders of a standard scene at 640 x 480, rendered once into the cache."""
    from dsac_ros.data import write_folder
    from dsac_ros.data.scenes import get_scene

    root = _cache_dir() / "bench_mapping" / f"{name}_640x480"
    seconds: dict[str, float] = {}
    for split in ("mapping", "test"):
        target = root / split
        timing = root / f"{split}.render_seconds"
        if not target.exists():
            log(f"rendering {name} {split} at 640x480 into {target} (once)")
            partial = target.with_name(split + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            start = time.perf_counter()
            write_folder(get_scene(name).render_frames(split, 640, 480), partial)
            os.replace(partial, target)
            timing.write_text(f"{time.perf_counter() - start:.1f}\n")
        seconds[split] = float(timing.read_text()) if timing.exists() else float("nan")
    return root / "mapping", root / "test", seconds


def evaluate_map(map_path: Path, test_dir: Path, device: str, every: int, progress: bool) -> dict[str, Any]:
    from dsac_ros.data import open_recording
    from dsac_ros.evaluation import compute_metrics, evaluate_frames
    from dsac_ros.localizer import Localizer

    localizer = Localizer(map_path, device=device)
    recording = open_recording(test_dir)
    records = evaluate_frames(localizer, recording, every=every, progress=progress, total=len(recording))
    return compute_metrics(records)


def _fmt(value, digits: int = 1) -> str:
    return "fail" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'scene':<11} {'head':<7} {'mode':<5} {'e2e':<4} {'5cm/5d %':>8} {'2cm/2d %':>8} {'med cm':>7} {'med deg':>8} "
              f"{'map s':>6} {'buffer s':>8} {'head st':>7} {'e2e st':>6} {'val med cm':>10} {'loc ms':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        m, t = r["metrics"], r["training"]
        timings = t.get("timings_s", {})
        buffer_s = sum(timings.get(k, 0.0) for k in ("read", "prepare", "augment", "encoder", "targets"))
        stages = t.get("stages", {})
        val = (t.get("validation") or {}).get("median_translation_cm")
        lines.append(f"{r['scene']:<11} {t.get('network', '?'):<7} {r['mode']:<5} {'on' if r['end_to_end'] else 'off':<4} "
                     f"{m['pct_5cm_5deg']:8.1f} {m['pct_2cm_2deg']:8.1f} {_fmt(m['median_translation_cm']):>7} "
                     f"{_fmt(m['median_rotation_deg'], 2):>8} {t['wall_seconds']:6.0f} {buffer_s:8.1f} "
                     f"{stages.get('head', {}).get('steps', 0):7d} {stages.get('end_to_end', {}).get('steps', 0):6d} "
                     f"{_fmt(val):>10} {_fmt(m.get('median_ms_total'), 0):>6}")
    return "\n".join(lines)


def format_time_split(rows: list[dict[str, Any]]) -> str:
    """Where mapping time went, per run (seconds and percent of the run's wall time)."""
    names = ["read", "prepare", "augment", "encoder", "targets", "memory", "head_steps", "e2e_steps", "validation",
             "checkpoint", "save"]
    header = f"{'run':<30}" + "".join(f"{n:>11}" for n in names)
    lines = ["time per part (s):", header]
    for r in rows:
        timings = r["training"].get("timings_s", {})
        label = f"{r['scene']}/{r['training'].get('network', '?')}/{r['mode']}/{'e2e' if r['end_to_end'] else 'no-e2e'}"
        lines.append(f"{label:<30}" + "".join(f"{timings.get(n, 0.0):11.1f}" for n in names))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from dsac_ros.mapping import AugmentationOptions, map_recording

    if args.threads:
        torch.set_num_threads(args.threads)
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    networks = [n.strip() for n in args.network.split(",") if n.strip()] if args.network else [None]
    e2e_settings = [{"off": False, "on": True}[v.strip()] for v in args.e2e.split(",") if v.strip()]
    maps_dir = Path(args.maps_dir) if args.maps_dir else Path(tempfile.mkdtemp(prefix="dsac_ros_bench_mapping_"))
    maps_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    render_seconds = {}
    for scene in scenes:
        mapping_dir, test_dir, render_seconds[scene] = prepare_scene(scene)
        for mode in modes:
            for network, end_to_end in [(n, e) for n in networks for e in e2e_settings]:
                changes = {}
                if network:
                    changes["network"] = network
                if args.passes:
                    changes["augmentation"] = AugmentationOptions(passes=args.passes)
                options = MappingOptions(mode=mode, minutes=args.minutes, end_to_end=end_to_end, device=args.device,
                                         encoder_path=args.encoder, threads=args.threads, progress=not args.quiet,
                                         **changes)
                out = maps_dir / f"{scene}_{options.network}_{mode}_{'e2e' if end_to_end else 'plain'}.pt"
                print(f"== {scene} {options.network} {mode} end-to-end {'on' if end_to_end else 'off'}: mapping {args.minutes:g} min",
                      file=sys.stderr)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # the random-encoder warning is logged once
                    result = map_recording(mapping_dir, out, options)
                start = time.perf_counter()
                metrics = evaluate_map(out, test_dir, args.device, args.test_every, not args.quiet)
                row = {"scene": scene, "mode": mode, "end_to_end": end_to_end, "minutes": args.minutes,
                       "metrics": metrics, "evaluation_seconds": round(time.perf_counter() - start, 1),
                       "training": result.training, "map": str(out)}
                rows.append(row)
                print(format_table([row]).splitlines()[-1], file=sys.stderr)
    payload = {"benchmark": "mapping", "minutes": args.minutes, "threads": torch.get_num_threads(),
               "load_average": os.getloadavg(), "render_seconds": render_seconds,
               "encoder": rows[0]["training"].get("encoder") if rows else None, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(format_table(rows))
    print()
    print(format_time_split(rows))
    print(f"wrote {args.out}")
    return 0
