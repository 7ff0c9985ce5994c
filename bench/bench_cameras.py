#!/usr/bin/env python3
"""Same as `dsac-ros bench cameras`: maps from a Kinect-like sensor's bags and from a distorted
lens's bags (the *_sensor and *_distorted scenes) against their pinhole twins, and the
distortion-ignored baseline, rgbd and rgb, evaluated offline and live through the node. JSON to
bench/results/cameras.json (rows accumulate) and a printed table."""

import argparse
import sys

from dsac_ros.benchmarks import cameras

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    cameras.add_arguments(parser)
    sys.exit(cameras.run(parser.parse_args()))
