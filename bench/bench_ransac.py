#!/usr/bin/env python3
"""Same as `dsac-ros bench ransac`: DSAC vs PoseLib vs OpenCV MAGSAC; JSON to bench/results/ransac.json."""

import argparse
import sys


from dsac_ros.benchmarks import ransac

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    ransac.add_arguments(parser)
    sys.exit(ransac.run(parser.parse_args()))
