"""``dsac-ros replay BAG``: play a rosbag2 into the live ROS graph, publishing /clock
(the library side is ``dsac_ros.ros.replay.BagPlayer``)."""

from __future__ import annotations

import argparse
import sys
import time

from dsac_ros.ros.replay import DEFAULT_CLOCK_RATE_HZ, BagPlayer, ReplayError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", metavar="BAG", help="rosbag2 directory (MCAP or sqlite3) or a .mcap / .db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default: 1.0)")
    parser.add_argument("--loop", action="store_true",
                        help="play again from the start at the end (/clock jumps backwards; stop with Ctrl-C)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", default=None, help="play only these topics")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--clock-rate", type=float, default=DEFAULT_CLOCK_RATE_HZ, metavar="HZ",
                        help=f"/clock ticks per second between messages (default: {DEFAULT_CLOCK_RATE_HZ:g})")
    parser.add_argument("--delay", type=float, default=0.5, metavar="S",
                        help="wait this long after creating the publishers so subscribers discover them "
                             "(default: 0.5)")


def run(args: argparse.Namespace) -> int:
    import rclpy

    if not args.rate > 0 or not args.clock_rate > 0 or args.delay < 0:
        print("dsac-ros replay: --rate and --clock-rate must be positive, --delay not negative", file=sys.stderr)
        return 2
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("dsac_replay", context=context)
    player = None
    try:
        try:
            player = BagPlayer(node, args.bag, topics=args.topics, rate=args.rate, loop=args.loop,
                               clock=not args.no_clock, clock_rate_hz=args.clock_rate)
        except ReplayError as error:
            print(f"dsac-ros replay: {error}", file=sys.stderr)
            return 2
        if not player.publishers:
            print(f"dsac-ros replay: nothing to play in {args.bag}", file=sys.stderr)
            return 1
        counts = ", ".join(f"{topic} ({player.message_counts[topic]})" for topic in player.publishers)
        print(f"playing {args.bag} at rate {args.rate:g}{' in a loop' if args.loop else ''}: {counts}")
        try:
            time.sleep(args.delay)
            stats = player.play()
        except KeyboardInterrupt:
            print("stopped")
            return 0
        print(f"published {stats.total} messages in {stats.passes} pass(es)")
        return 0
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
