#!/usr/bin/env python3
"""Same as `dsac-ros bench mapping`: map small_room / large_room (rgbd, rgb; with and without the
end-to-end stage) on a wall-clock budget, evaluate on the test sequences; JSON to
bench/results/mapping.json and a printed table. `--minutes` and `--scenes` for shorter runs."""

import argparse
import sys


from dsac_ros.benchmarks import mapping

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    mapping.add_arguments(parser)
    sys.exit(mapping.run(parser.parse_args()))
