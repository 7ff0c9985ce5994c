"""``dsac-ros map DATA --out MAP.pt``: train a map from a folder or rosbag2 with images and poses.

Budget split (wall clock, ``--minutes``): reading and buffering take what they take (printed at
the end; augmented buffer passes beyond the second are added while the buffer fits in 30 % of
the budget, at most 6 views per frame); of the rest, 3 % (at least 2 s) is kept for final
validation and saving, then 80 % goes to head training and 20 % to the end-to-end DSAC stage
(100 % to head training with ``--no-end-to-end``). ``full`` mode splits the same way between
whole-network training and its end-to-end stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dsac_ros.cli.recording import add_recording_arguments, recording_options
from dsac_ros.mapping.keyframes import KeyframeOptions
from dsac_ros.mapping.options import (INPUT_NORMALIZATIONS, MODES, TRIANGULATIONS, MappingOptions, MemoryOptions,
                                      default_of)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA",
                        help="folder or rosbag2 with images, intrinsics and poses (+ depth for rgbd)")
    parser.add_argument("--out", required=True, metavar="MAP.pt", help="map file to write")
    parser.add_argument("--minutes", type=float, default=default_of(MappingOptions, "minutes"),
                        help="wall-clock budget in minutes (default: %(default)g)")
    parser.add_argument("--mode", choices=MODES, default=default_of(MappingOptions, "mode"),
                        help="rgbd: depth + poses (coordinate loss); rgb: poses only (reprojection loss); "
                             "full: train the whole network, DSAC*-style (GPU, long runs) (default: %(default)s)")
    parser.add_argument("--end-to-end", dest="end_to_end", action=argparse.BooleanOptionalAction,
                        default=default_of(MappingOptions, "end_to_end"),
                        help="finish with the end-to-end DSAC stage (default: off for memory maps, where it "
                             "did not pay for its time on real images; on for --network fast/ace and full mode)")
    parser.add_argument("--device", default=default_of(MappingOptions, "device"),
                        help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--encoder", metavar="PATH", default="auto",
                        help="pretrained encoder file, or 'shipped' / 'lean' (the package's; lean: 8-16-32-64 "
                             "widths, a quarter of the encoder's time; default: lean for memory maps at 480 px "
                             "and above, else shipped)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run of the same --out from its checkpoint (MAP.pt.ckpt/)")
    parser.add_argument("--network", default=None,
                        help="head (or, in full mode, network) architecture: memory (scene memory "
                             "head), fast or ace (trained MLP heads), full "
                             "(default: memory for rgbd/rgb, full for full mode)")
    parser.add_argument("--input-height", type=int, default=default_of(MappingOptions, "input_height_px"), metavar="PX",
                        help="network input height, a multiple of 8 (default: 480 for memory maps, 240 otherwise)")
    parser.add_argument("--passes", type=int, default=None, metavar="N",
                        help="views per frame in the buffer: 1 plain + N-1 augmented (default: as many as fit "
                             "in 30 %% of the budget, 2 to 6)")
    parser.add_argument("--every", type=int, default=default_of(MappingOptions, "frame_stride"), metavar="K",
                        help="use every K-th frame (default: %(default)s)")
    parser.add_argument("--keyframes", action=argparse.BooleanOptionalAction,
                        default=default_of(KeyframeOptions, "enabled"),
                        help="memory maps: keep only the frames that show something new (default: on)")
    parser.add_argument("--triangulation", choices=TRIANGULATIONS, default=default_of(MemoryOptions, "triangulation"),
                        help="rgb memory maps: sweep (plane sweep of each cell's ray through similar frames' "
                             "features) or matches (triangulated nearest-key matches) (default: %(default)s)")
    parser.add_argument("--key-bytes", type=int, default=default_of(MemoryOptions, "subquantizers"), metavar="B",
                        help="memory maps: bytes per product-quantised key; 0 keeps dense float16 keys, "
                             "256 bytes each (default: %(default)s)")
    parser.add_argument("--key-stride", type=int, default=default_of(MemoryOptions, "key_stride"), metavar="S",
                        help="memory maps: keep keys on every S-th cell of each axis; queries search with the same "
                             "sub-grid and place each match on the full grid (default: 2 for memory maps at 480 px "
                             "and above, else 1)")
    parser.add_argument("--input-normalization", choices=INPUT_NORMALIZATIONS,
                        default=default_of(MappingOptions, "input_normalization"),
                        help="network input: fixed mean / std; per_image_gain (each image scaled to the fixed "
                             "mean: cancels auto-exposure); per_image (each image standardised by its own mean "
                             "and std); auto: per_image_gain for memory maps, fixed otherwise (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's)")
    parser.add_argument("--seed", type=int, default=default_of(MappingOptions, "seed"),
                        help="random seed (default: %(default)s)")
    parser.add_argument("--keep-checkpoint", action="store_true", help="keep MAP.pt.ckpt/ after success")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_recording_arguments(parser)


def format_summary(training: dict) -> str:
    """The end-of-run table: where the time went, per-stage steps and losses, validation."""
    timings = training.get("timings_s", {})
    total = sum(timings.values()) or 1.0
    lines = [f"mode {training['mode']}, end-to-end {'on' if training['end_to_end'] else 'off'}, "
             f"{training['wall_seconds']:.0f} s wall, encoder {training.get('encoder', '?')}"]
    data = training.get("data", {})
    lines.append(f"frames: {data.get('mapping_frames', '?')} mapping, {data.get('validation_frames', '?')} held out; "
                 f"buffer rows: {data.get('buffer_rows', '-')}")
    if data.get("keyframes"):
        keyframes = data["keyframes"]
        lines.append(f"keyframes: {keyframes['kept']} of {keyframes['considered']} mapping frames kept "
                     f"({keyframes['redundant']} showed nothing new)")
    lines.append("time per part:")
    for name, seconds in sorted(timings.items(), key=lambda item: -item[1]):
        lines.append(f"  {name:<16} {seconds:8.1f} s  {100 * seconds / total:5.1f} %")
    for stage, summary in training.get("stages", {}).items():
        if summary:
            lines.append(f"stage {stage}: {summary['steps']} steps in {summary['seconds']:.0f} s, loss "
                         f"{summary['first_loss']} -> {summary['last_loss']}"
                         + (f", {summary['skipped']} skipped" if summary.get("skipped") else ""))
    validation = training.get("validation") or {}
    if validation:
        t, r = validation.get("median_translation_cm"), validation.get("median_rotation_deg")
        median = "failed" if t is None else f"{t:.1f} cm / {r:.2f} deg"
        lines.append(f"held-out mapping frames: {validation['frames']}, median {median}, "
                     f"{validation['pct_5cm_5deg']:.0f} % within 5 cm / 5 deg")
    return "\n".join(lines)


def format_size(path) -> str:
    """One line: the map's size and what its bytes are, largest part first."""
    from dsac_ros.mapfile import map_size_report

    report = map_size_report(path)
    parts = sorted(report["parts"].items(), key=lambda item: -item[1])
    shown = ", ".join(f"{name} {mb:.2f} MB" for name, mb in parts if mb >= 0.005)
    return f"map size: {report['file_mb']:.2f} MB, dominated by {report['dominant']} ({shown})"


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dsac_ros.data import RecordingError
    from dsac_ros.device import DeviceError
    from dsac_ros.mapping import AugmentationOptions, MappingError, MappingOptions, map_recording
    from dsac_ros.encoder_file import EncoderFileError

    changes = {}
    if args.key_bytes < 0:
        print("dsac-ros map: --key-bytes must be 0 (dense keys) or positive", file=sys.stderr)
        return 2
    changes["memory"] = MemoryOptions(keyframes=KeyframeOptions(enabled=args.keyframes),
                                      subquantizers=args.key_bytes or None, triangulation=args.triangulation,
                                      key_stride=args.key_stride)
    if args.passes is not None:
        changes["augmentation"] = AugmentationOptions(passes=args.passes)
    try:
        options = MappingOptions(mode=args.mode, minutes=args.minutes, end_to_end=args.end_to_end, device=args.device,
                                 encoder_path=args.encoder, network=args.network, frame_stride=args.every,
                                 input_height_px=args.input_height, input_normalization=args.input_normalization,
                                 threads=args.threads, seed=args.seed, progress=not args.quiet, **changes)
        result = map_recording(Path(args.data), args.out, options, resume=args.resume,
                               recording=recording_options(args),
                               keep_checkpoint=args.keep_checkpoint)
    except (MappingError, RecordingError, DeviceError, EncoderFileError, ValueError, OSError) as error:
        print(f"dsac-ros map: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndsac-ros map: interrupted; continue with: dsac-ros map {args.data} --out {args.out} --resume",
              file=sys.stderr)
        return 130
    print(format_summary(result.training))
    print(format_size(result.path))
    print(f"map written to {result.path}")
    if args.quiet:
        print(json.dumps(result.training.get("validation", {})))
    return 0
