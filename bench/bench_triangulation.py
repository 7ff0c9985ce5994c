#!/usr/bin/env python3
"""Same as `dsac-ros bench triangulation`: rgb maps' coordinates (plane sweep, triangulated matches)
against the renderer's truth on the standard scenes. JSON to bench/results/triangulation.json."""

import argparse
import sys

from dsac_ros.benchmarks import triangulation

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    triangulation.add_arguments(parser)
    sys.exit(triangulation.run(parser.parse_args()))
