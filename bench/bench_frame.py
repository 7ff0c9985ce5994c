#!/usr/bin/env python3
"""Same as `dsac-ros bench frame`: one 640x480 frame end to end (decode, prepare, encoder, lookup,
DSAC, publish) on the standard scenes' memory maps, each encoder backend side by side, and
hopeless frames with and without a DSAC time budget. JSON to bench/results/frame.json and a table."""

import argparse
import sys

from dsac_ros.benchmarks import frame

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    frame.add_arguments(parser)
    sys.exit(frame.run(parser.parse_args()))
