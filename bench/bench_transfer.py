#!/usr/bin/env python3
"""Same as `dsac-ros bench transfer`: encoders side by side on held-out procedural rooms, rgbd and
rgb maps, localising nearby views. JSON to bench/results/transfer.json and a printed table."""

import argparse
import sys

from dsac_ros.benchmarks import transfer

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    transfer.add_arguments(parser)
    sys.exit(transfer.run(parser.parse_args()))
