#!/usr/bin/env python3
"""Same as `dsac-ros bench classical`: the classical baseline (SIFT + retrieval + ratio-test
matching + PoseLib LO-RANSAC) on the standard scenes, rgbd and rgb. JSON to
bench/results/classical.json and a printed line per row."""

import argparse
import sys

from dsac_ros.benchmarks import classical

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    classical.add_arguments(parser)
    sys.exit(classical.run(parser.parse_args()))
