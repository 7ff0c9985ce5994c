"""``dsac-ros evaluate-live BAG --map MAP.pt``: replay a bag through the ROS node and report errors
(the library side is ``dsac_ros.ros.evaluate_live``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dsac_ros.cli.recording import add_recording_arguments, recording_options
from dsac_ros.ros.evaluate_live import DEFAULT_FRAME_TIMEOUT_S, LiveEvaluationError, evaluate_bag_live, parse_parameters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", metavar="BAG", help="rosbag2 with images, CameraInfo and ground truth "
                                                   "(a pose topic or /tf)")
    parser.add_argument("--map", required=True, metavar="MAP.pt", help="map file written by 'dsac-ros map'")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="write metrics.json, per_frame.csv, est.txt/gt.txt (TUM) and PNG plots here")
    parser.add_argument("--rate", type=float, default=None, metavar="R",
                        help="play in real time at R times the recorded speed, dropping frames the node "
                             "cannot keep up with (default: lockstep, every frame waits for its status)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC",
                        help="topics to play (default: image, camera_info, depth with --use-depth, /tf, /tf_static)")
    add_recording_arguments(parser, formats=False)
    parser.add_argument("--use-depth", action="store_true", help="run the node with use_depth (RGB-D hypotheses)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="set a node parameter, e.g. ransac.hypotheses=128 (repeatable)")
    parser.add_argument("--frame-timeout", type=float, default=DEFAULT_FRAME_TIMEOUT_S, metavar="S",
                        help=f"how long to wait for a frame's status (default: {DEFAULT_FRAME_TIMEOUT_S:g})")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots in the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def format_live_lines(live: dict[str, Any]) -> str:
    def ms(key):
        value = live.get(key)
        return "-" if value is None else f"{value:.1f}"

    return (f"frames dropped (no status)  {live['frames_dropped']} of {live['frames_sent']} sent "
            f"(node count: {live['node_frames_dropped']})\n"
            f"end-to-end latency median / p95  {ms('median_ms_latency')} / {ms('p95_ms_latency')} ms")


def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dsac_ros.data.errors import RecordingError
    from dsac_ros.evaluation import compute_metrics, format_metrics_table, write_report
    from dsac_ros.progress import progress_bar
    from dsac_ros.ros.replay import ReplayError

    if args.rate is not None and not args.rate > 0:
        print("dsac-ros evaluate-live: --rate must be positive", file=sys.stderr)
        return 2
    if not Path(args.map).is_file():
        print(f"dsac-ros evaluate-live: no map file {args.map}", file=sys.stderr)
        return 2
    try:
        parameters = parse_parameters(args.param)
    except ValueError as error:
        print(f"dsac-ros evaluate-live: {error}", file=sys.stderr)
        return 2
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print("dsac-ros evaluate-live: --threads must be at least 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    bar = progress_bar(unit="frame", disable=args.quiet, dynamic_ncols=True, file=sys.stderr)

    def progress(status) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{status.state_name} {status.total_ms:.0f} ms")

    try:
        live = evaluate_bag_live(args.bag, args.map, rate=args.rate, device=args.device, topics=args.topics,
                                 **recording_options(args).as_kwargs(), use_depth=args.use_depth, node_parameters=parameters,
                                 frame_timeout_s=args.frame_timeout, progress=progress)
    except (RecordingError, ReplayError, LiveEvaluationError, OSError) as error:
        print(f"dsac-ros evaluate-live: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a parameter the node rejects
        print(f"dsac-ros evaluate-live: {error}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    if not live.records:
        print(f"dsac-ros evaluate-live: no image frames in {args.bag}", file=sys.stderr)
        return 1
    metrics = compute_metrics(live.records)
    extra_metrics = live.live_metrics()
    metrics.update(extra_metrics)
    rate = "lockstep" if args.rate is None else f"rate {args.rate:g}"
    device = live.device or args.device
    title = f"{Path(args.bag).name} with {Path(args.map).name} through the node on {device} ({rate})"
    print(format_metrics_table(metrics, title))
    print(format_live_lines(extra_metrics))
    if live.no_model_reason:
        print(f"dsac-ros evaluate-live: the node had no usable map: {live.no_model_reason}", file=sys.stderr)
    if args.report:
        run_info = {"bag": str(args.bag), "map": str(args.map), "device": live.device or args.device,
                    "mode": live.mode, "rate": args.rate, "use_depth": bool(args.use_depth), "seed": "from stamp",
                    "node_parameters": live.node_parameters,
                    "node_frames_processed": live.node_frames_processed}
        paths = write_report(args.report, live.records, metrics, title=title, extra=run_info, plots=not args.no_plots)
        print(f"report written to {Path(args.report)} ({', '.join(p.name for p in paths.values())})")
    return 1 if live.no_model_reason else 0
