#!/usr/bin/env python3
"""Same as `dsac-ros bench compact`: dense (format 1) against compact (format 2) memory maps on
small_room, large_room and the 4,000-frame small_room_long (and its first 1,000 frames), rgbd and
rgb; map size, mapping time, peak RSS, accuracy and time per frame side by side. JSON to
bench/results/compact.json and a printed table."""

import argparse
import sys

from dsac_ros.benchmarks import compact

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    compact.add_arguments(parser)
    sys.exit(compact.run(parser.parse_args()))
