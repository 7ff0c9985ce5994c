"""``dsac-ros synth``: render a standard synthetic scene to a rosbag2 or a folder.

    dsac-ros synth --list
    dsac-ros synth small_room --out data/small_room_mapping                # MCAP bag, mapping split
    dsac-ros synth small_room --out data/small_room_test --split test
    dsac-ros synth tiny --out /tmp/tiny --format folder
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

    total = spec.num_frames(args.split, args.stride)
    frames = spec.render_frames(args.split, args.width, args.height, args.stride)
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
