"""Encoder transfer: how well the real mapping pipeline maps rooms no encoder was trained on.

For held-out procedural rooms (seeds from ``dsac_ros.pretrain.HELDOUT_SEED_BASE``, never rendered
in pretraining): ``map_recording`` (no end-to-end stage: the same work on any load) on random
views, rgbd or rgb, then the ``Localizer`` on RGB test views perturbed from mapping views
(7-Scenes-like reach). Several encoder files run side by side on the same rooms and views, so a
leaner or retrained encoder is judged against the shipped one in one run. Used by ``dsac-ros
pretrain-encoder --evaluate`` and by the benchmark (JSON to bench/results/transfer.json):

    dsac-ros bench transfer [--encoders shipped,lean,FILE] [--modes rgbd,rgb] [--rooms 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from dsac_ros.encoder_file import NAMED_ENCODERS, encoder_path_of
from dsac_ros.pretrain import perturbed_views

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "transfer.json"
METRICS = ("pct_5cm_5deg", "pct_2cm_2deg", "median_translation_cm", "median_rotation_deg")


def encoder_file(name: str) -> Path:
    """'shipped', 'lean' or a path -> the encoder file (SystemExit with the reason if it is missing)."""
    path = encoder_path_of(name)
    if not path.is_file():
        raise SystemExit(f"no encoder file {path} (choose {', '.join(NAMED_ENCODERS)} or an encoder file's path)")
    return path


def evaluate_transfer(encoder_path: Path, seeds: list[int], minutes: float = 1.0, mapping_views: int = 80,
                      test_views: int = 30, device: str = "cpu", mode: str = "rgbd",
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """How well ``map_recording`` maps unseen rooms with an encoder file.

    For each room seed: ``mode`` (rgbd, or rgb from images and poses only) for ``minutes`` on
    ``mapping_views`` random views at 320x240, then the Localizer (RGB only) on up to
    ``test_views`` perturbed views that keep 10 cm from the geometry. Rooms and views depend on
    the seed alone, so every encoder sees the same ones. Returns per room and mean: % within
    5 cm / 5 deg and 2 cm / 2 deg, median errors.
    """
    from dsac_ros.data.render import render
    from dsac_ros.data.scenes import BASE_INTRINSICS, FRAME_PERIOD_NS, random_scene
    from dsac_ros.data.trajectories import random_views
    from dsac_ros.evaluation import compute_metrics, evaluate_frames
    from dsac_ros.frame import Frame
    from dsac_ros.localizer import Localizer
    from dsac_ros.mapping import MappingOptions, map_recording

    intrinsics = BASE_INTRINSICS.resized(320, 240)
    rooms = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        scene = random_scene(seed)
        mapping_poses = random_views(scene, mapping_views, seed)
        test_poses = perturbed_views(mapping_poses[rng.choice(mapping_views, min(test_views, mapping_views),
                                                              replace=False)], rng)
        test_poses = test_poses[scene.clearance_m(test_poses[:, :3, 3]) > 0.1]  # never inside geometry

        def frames(poses: np.ndarray) -> list:
            rendered = []
            for index, pose in enumerate(poses):
                image, depth = render(scene, pose, intrinsics)
                rendered.append(Frame(image, intrinsics, index * FRAME_PERIOD_NS, depth, pose, f"room{seed}-{index}"))
            return rendered

        with tempfile.TemporaryDirectory() as tmp:
            map_path = Path(tmp) / "room.pt"
            options = MappingOptions(mode=mode, minutes=minutes, end_to_end=False, device=device, progress=False,
                                     encoder_path=str(encoder_path))
            started = time.perf_counter()
            map_recording(frames(mapping_poses), map_path, options, log=lambda _: None)
            map_seconds = time.perf_counter() - started
            records = evaluate_frames(Localizer(map_path, device=device), frames(test_poses), progress=False)
        metrics = compute_metrics(records)
        result = {"seed": seed, "frames": metrics["frames"], "map_seconds": map_seconds,
                  **{key: metrics[key] for key in METRICS}}
        log(json.dumps(result))
        rooms.append(result)
    summary: dict[str, Any] = {"encoder": str(encoder_path), "mode": mode}
    for key in METRICS:
        values = [r[key] for r in rooms if r[key] is not None]
        summary[key] = float(np.mean(values)) if values else None
    summary["rooms"] = rooms
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoders", default="shipped,lean",
                        help="comma-separated encoders side by side: shipped, lean or encoder files (default: %(default)s)")
    parser.add_argument("--modes", default="rgbd",
                        help="comma-separated mapping modes: rgbd, rgb (random views scattered through a room, not a "
                             "walk, leave rgb maps few neighbours to triangulate from: most rooms fail; default: %(default)s)")
    parser.add_argument("--rooms", type=int, default=6, help="held-out procedural rooms (default: %(default)s)")
    parser.add_argument("--mapping-views", type=int, default=80, help="mapping views per room (default: %(default)s)")
    parser.add_argument("--test-views", type=int, default=30, help="test views per room (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=3.0,
                        help="mapping budget per map; its buffer share (30 %%) must hold every view (default: %(default)g)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})")


def run(args: argparse.Namespace) -> int:
    import torch

    from dsac_ros.encoder_file import encoder_shape
    from dsac_ros.mapping.options import MODES
    from dsac_ros.pretrain import HELDOUT_SEED_BASE

    encoders = [(name, encoder_file(name)) for name in (n.strip() for n in args.encoders.split(",")) if name]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not encoders or not modes or args.rooms < 1 or args.mapping_views < 2 or args.test_views < 1:
        raise SystemExit("bench transfer needs an encoder, a mode, --rooms >= 1, --mapping-views >= 2 and "
                         "--test-views >= 1")
    unknown = [m for m in modes if m not in MODES or m == "full"]
    if unknown:
        raise SystemExit(f"bench transfer: unknown mode(s) {', '.join(unknown)} (rgbd, rgb)")
    torch.set_num_threads(int(args.threads))
    seeds = [HELDOUT_SEED_BASE + i for i in range(args.rooms)]
    rows: list[dict[str, Any]] = []
    for mode in modes:
        for name, path in encoders:  # encoders side by side within a mode
            summary = evaluate_transfer(path, seeds, args.minutes, args.mapping_views, args.test_views,
                                        args.device, mode, log=lambda _: None)
            row = {**summary, "encoder": name, "encoder_file": str(path), "widths": encoder_shape(path)}
            rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "transfer", "threads": args.threads, "seeds": seeds,
                                    "mapping_views": args.mapping_views, "test_views": args.test_views,
                                    "minutes": args.minutes, "load_average_1min_end": os.getloadavg()[0],
                                    "rows": rows}, indent=2) + "\n")
    print(format_table(rows))
    print(f"JSON: {args.out}")
    return 0


def _cell(value: Optional[float], unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| mode | encoder | widths | rooms | 5 cm / 5 deg | 2 cm / 2 deg | median error | worst room 5 cm |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        worst = min((r["pct_5cm_5deg"] for r in row["rooms"] if r["pct_5cm_5deg"] is not None), default=None)
        lines.append(f"| {row['mode']} | {row['encoder']} | {row['widths']} | {len(row['rooms'])} | "
                     f"{_cell(row['pct_5cm_5deg'], ' %')} | {_cell(row['pct_2cm_2deg'], ' %')} | "
                     f"{_cell(row['median_translation_cm'], ' cm')} / {_cell(row['median_rotation_deg'], ' deg')} | "
                     f"{_cell(worst, ' %')} |")
    return "\n".join(lines)


__all__ = ["DEFAULT_OUT", "add_arguments", "encoder_file", "evaluate_transfer", "format_table", "run"]
