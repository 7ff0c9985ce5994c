#!/usr/bin/env python3
"""Same as `dsac-ros bench real`: dsac_ros beside SIFT + PoseLib on the real 7-Scenes recording in
../shared/real/ (read where it lies, never copied). JSON to bench/results/real.json and a printed
line per row; exits 2 with the reason where the recording is absent."""

import argparse
import sys

from dsac_ros.benchmarks import real

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    real.add_arguments(parser)
    sys.exit(real.run(parser.parse_args()))
