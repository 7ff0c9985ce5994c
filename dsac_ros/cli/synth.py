"""``dsac-ros synth``: render a standard synthetic scene to a rosbag2 or a folder.

    dsac-ros synth --list
    dsac-ros synth small_room --out data/small_room_mapping                # MCAP bag, mapping split
    dsac-ros synth small_room --out data/small_room_test --split test
    dsac-ros synth tiny --out /tmp/tiny --format folder
    dsac-ros synth small_room_sensor --out data/noisy      # the Kinect-like sensor variant
    dsac-ros synth small_room --out data/custom --pixel-noise 3 --jpeg 90 --depth-noise 0.0012,0.0019,0.4

Sensor options (any of them replaces the scene's own effects; dsac_ros.data.sensor) are seeded and
deterministic: the same seed gives the same frames, whatever the stride.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", nargs="?", help="standard scene name (see --list)")
    parser.add_argument("--list", action="store_true", help="print the standard scene names, one per line, and exit")
    parser.add_argument("--out", type=Path, help="output bag directory or folder (must not exist)")
    parser.add_argument("--format", choices=("bag", "folder"), default="bag", help="output format (default: bag)")
    parser.add_argument("--split", choices=("mapping", "test"), default="mapping", help="sequence (default: mapping)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default: mcap)")
    parser.add_argument("--no-compression", action="store_true", help="do not zstd-compress MCAP chunks")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (default: the scene's)")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (default: the scene's)")
    parser.add_argument("--stride", type=int, default=1, help="render every N-th frame (default: 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    sensor = parser.add_argument_group("sensor effects (replace the scene's own; ranges LOW,HIGH drawn per frame)")
    sensor.add_argument("--pixel-noise", type=float, metavar="SIGMA", help="Gaussian pixel noise, 8-bit levels")
    sensor.add_argument("--jpeg", type=int, metavar="QUALITY", help="JPEG round trip at this quality (1-100)")
    sensor.add_argument("--exposure", metavar="LOW,HIGH", help="exposure gain range, e.g. 0.6,1.4")
    sensor.add_argument("--gamma", metavar="LOW,HIGH", help="gamma range, e.g. 0.8,1.25")
    sensor.add_argument("--motion-blur", metavar="LOW,HIGH", help="motion blur length along the image motion, px")
    sensor.add_argument("--motion-blur-fraction", type=float, metavar="F", help="share of frames blurred (0-1)")
    sensor.add_argument("--depth-noise", metavar="A,B,Z0", help="depth noise sigma = A + B (z - Z0)^2, metres")
    sensor.add_argument("--depth-dropout", type=float, metavar="F", help="share of depth pixels lost (0-1)")
    sensor.add_argument("--depth-max", type=float, metavar="M", help="no depth beyond this range, metres")
    sensor.add_argument("--depth-edge-holes", type=int, metavar="PX", help="no depth within PX of a depth edge")
    sensor.add_argument("--sensor-seed", type=int, default=0, help="seed of the sensor effects (default: 0)")


SENSOR_OPTIONS = {"pixel_noise": "pixel_noise_sigma", "jpeg": "jpeg_quality", "exposure": "exposure_gain",
                  "gamma": "gamma", "motion_blur": "motion_blur_px", "motion_blur_fraction": "motion_blur_fraction",
                  "depth_noise": "depth_noise_m", "depth_dropout": "depth_dropout", "depth_max": "depth_max_m",
                  "depth_edge_holes": "depth_edge_holes_px"}


def sensor_from_arguments(args: argparse.Namespace):
    """SensorEffects from the sensor options, or None when none is given. Raises ValueError."""
    from dsac_ros.data.sensor import SensorEffects

    values = {}
    for option, field_name in SENSOR_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                numbers = tuple(float(part) for part in value.split(","))
            except ValueError:
                raise ValueError(f"--{option.replace('_', '-')} takes comma-separated numbers, got {value!r}") from None
            expected = 3 if option == "depth_noise" else 2
            if len(numbers) != expected:
                raise ValueError(f"--{option.replace('_', '-')} takes {expected} numbers, got {value!r}")
            value = numbers
        values[field_name] = value
    if not values:
        return None
    if "jpeg_quality" in values and not 1 <= values["jpeg_quality"] <= 100:
        raise ValueError(f"--jpeg must be 1-100, got {values['jpeg_quality']}")
    for name in ("motion_blur_fraction", "depth_dropout"):
        if name in values and not 0.0 <= values[name] <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0-1, got {values[name]}")
    return SensorEffects(seed=args.sensor_seed, **values)


def run(args: argparse.Namespace) -> int:
    from dsac_ros.data.scenes import get_scene, list_scenes

    if args.list:
        for name in list_scenes():
            print(name)
        return 0
    if not args.scene:
        print("dsac-ros synth: give a scene name (or --list)", file=sys.stderr)
        return 2
    if args.out is None:
        print("dsac-ros synth: --out PATH is required", file=sys.stderr)
        return 2
    try:
        spec = get_scene(args.scene)
    except KeyError as error:
        print(f"dsac-ros synth: {error.args[0]}", file=sys.stderr)
        return 2
    if args.stride < 1:
        print("dsac-ros synth: --stride must be >= 1", file=sys.stderr)
        return 2
    if (args.width is None) != (args.height is None):
        print("dsac-ros synth: give both --width and --height, or neither", file=sys.stderr)
        return 2
    if args.out.exists() and (args.format == "bag" or any(args.out.iterdir())):
        print(f"dsac-ros synth: {args.out} exists; choose a new path", file=sys.stderr)
        return 2

    from dsac_ros.progress import progress_bar

    try:
        sensor = sensor_from_arguments(args)
    except ValueError as error:
        print(f"dsac-ros synth: {error}", file=sys.stderr)
        return 2
    total = spec.num_frames(args.split, args.stride)
    frames = spec.render_frames(args.split, args.width, args.height, args.stride, sensor=sensor)
    frames = progress_bar(frames, total=total, desc=f"{spec.name}/{args.split}", unit="frame", disable=args.quiet)
    if args.format == "bag":
        from dsac_ros.data import write_bag

        count = write_bag(frames, args.out, storage=args.storage, compress=not args.no_compression)
    else:
        from dsac_ros.data import write_folder

        count = write_folder(frames, args.out)
    size_mb = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 1e6
    print(f"wrote {count} frames of {spec.name} ({args.split}) to {args.out} ({size_mb:.1f} MB)")
    return 0
