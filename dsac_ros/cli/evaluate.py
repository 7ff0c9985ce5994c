"""``dsac-ros evaluate DATA --map MAP.pt [--report DIR]``: localise every frame and report errors.

DATA is a folder or a rosbag2 (anything ``dsac_ros.data.read_frames`` reads). Frames need
ground-truth poses to be scored; frames without are localised, timed and listed, not scored.
Estimates pass the node's acceptance gate (``dsac_ros.gate``, its min_inliers and min_inlier_ratio)
before they count, so the report shows what the node would publish: published %, false positives,
and what the gate stopped. ``--no-gate`` scores every estimate.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dsac_ros.cli.recording import add_recording_arguments, recording_options
from dsac_ros.depth_alignment import DepthAlignmentOptions
from dsac_ros.evaluation import DEFAULT_SEED, evaluate_frames
from dsac_ros.gate import GateSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="folder or rosbag2 with images, intrinsics and ground-truth poses")
    parser.add_argument("--map", required=True, metavar="MAP.pt", help="map file written by 'dsac-ros map'")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="write metrics.json, per_frame.csv, est.txt/gt.txt (TUM) and PNG plots here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    # Checked by the Localizer (dsac_ros.inference.BACKENDS), which names the choices when refusing.
    parser.add_argument("--backend", default="auto",
                        help="encoder runtime: auto, torch or onnxruntime (default: auto, onnxruntime on the CPU)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    parser.add_argument("--hypotheses", type=int, default=None, help="RANSAC hypotheses (default: the core's, 64)")
    parser.add_argument("--inlier-threshold", type=float, default=None, metavar="PX",
                        help="inlier reprojection threshold in pixels of the input image (default: the core's, 10)")
    parser.add_argument("--use-depth", action="store_true",
                        help="localise with the recorded depth (RGB-D hypotheses) instead of RGB only")
    parser.add_argument("--no-subcell", action="store_true",
                        help="memory maps: correspondences at cell centres (the node's subcell:=false)")
    parser.add_argument("--no-depth-alignment", action="store_true",
                        help="with --use-depth: keep DSAC's pose (the node's depth_alignment.enabled:=false)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="RANSAC seed of the first frame; frame i uses seed + i (default: 0)")
    parser.add_argument("--seed-from-stamp", action="store_true",
                        help="seed each frame from its stamp as the ROS node does (instead of --seed + index), "
                             "so results equal 'dsac-ros evaluate-live' on the same bag")
    parser.add_argument("--min-inliers", type=int, default=GateSettings().min_inliers, metavar="N",
                        help="the node's gate: count a pose as published only with at least N inliers "
                             "(default: the node's, %(default)s)")
    parser.add_argument("--min-inlier-ratio", type=float, default=GateSettings().min_inlier_ratio, metavar="R",
                        help="... and an inlier ratio of at least R (default: the node's, %(default)s)")
    parser.add_argument("--no-gate", action="store_true",
                        help="score every estimate DSAC returned, as if the node published all of them")
    parser.add_argument("--every", type=int, default=1, metavar="K", help="use every K-th frame (default: 1)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots in the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_recording_arguments(parser)


def _ransac_options(args: argparse.Namespace):
    from dsac_ros.dsac import RansacOptions
    changes = {}
    if args.hypotheses is not None:
        changes["hypotheses"] = args.hypotheses
    if args.inlier_threshold is not None:
        changes["inlier_threshold_px"] = args.inlier_threshold
    if not args.no_gate:  # as the node: the core's own floor stays at its default unless the gate's is lower
        changes["min_inliers"] = min(RansacOptions().min_inliers, args.min_inliers)
    return RansacOptions(**changes)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from dsac_ros.data import open_recording
    from dsac_ros.device import DeviceError
    from dsac_ros.evaluation import compute_metrics, format_metrics_table, write_report
    from dsac_ros.localizer import Localizer
    from dsac_ros.mapfile import MapFileError

    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        print("dsac-ros evaluate: --every and --max-frames must be at least 1", file=sys.stderr)
        return 2
    try:
        localizer = Localizer(args.map, device=args.device, ransac=_ransac_options(args), num_threads=args.threads,
                              backend=args.backend, subcell=not args.no_subcell,
                              depth_alignment=DepthAlignmentOptions(enabled=not args.no_depth_alignment))
    except (MapFileError, DeviceError, ValueError) as error:
        print(f"dsac-ros evaluate: {error}", file=sys.stderr)
        return 2
    data_path = Path(args.data)
    try:
        recording = open_recording(data_path, recording_options(args))
        try:
            records = evaluate_frames(localizer, recording, use_depth=args.use_depth, seed=args.seed,
                                      every=args.every, max_frames=args.max_frames, progress=not args.quiet,
                                      total=len(recording), seed_from_stamp=args.seed_from_stamp,
                                      gate_settings=None if args.no_gate else GateSettings(args.min_inliers,
                                                                                           args.min_inlier_ratio))
        finally:
            close = getattr(recording, "close", None)
            if close is not None:
                close()
    except (OSError, ValueError) as error:
        print(f"dsac-ros evaluate: cannot read {data_path}: {error}", file=sys.stderr)
        return 2
    if not records:
        print(f"dsac-ros evaluate: no frames in {data_path}", file=sys.stderr)
        return 1
    metrics = compute_metrics(records)
    backend = localizer.encoder_runner.describe()
    title = f"{data_path.name} with {Path(args.map).name} on {localizer.device_name}, {backend}"
    print(format_metrics_table(metrics, title))
    if metrics["frames"] == 0:
        print("dsac-ros evaluate: no frame has a ground-truth pose; nothing was scored", file=sys.stderr)
    if args.report:
        run_info = {"data": str(data_path), "map": str(args.map), "device": localizer.device_name,
                    "backend": backend,
                    "threads": torch.get_num_threads(),
                    "use_depth": bool(args.use_depth), "every": args.every,
                    "seed": "from stamp" if args.seed_from_stamp else args.seed,
                    "ransac": localizer.ransac_dict(),
                    "gate": "off" if args.no_gate else {"min_inliers": args.min_inliers,
                                                        "min_inlier_ratio": args.min_inlier_ratio}}
        paths = write_report(args.report, records, metrics, title=title, extra=run_info, plots=not args.no_plots)
        print(f"report written to {Path(args.report)} ({', '.join(p.name for p in paths.values())})")
    return 0
