"""``dsac-ros bench NAME``: run one benchmark, write its JSON and print its table."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module exposing add_arguments(parser) and run(args) -> int, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "ransac": ("dsac_ros.benchmarks.ransac",
               "DSAC (64/256 hypotheses) vs PoseLib LO-RANSAC vs OpenCV USAC_MAGSAC on generated 2D-3D problems"),
    "mapping": ("dsac_ros.benchmarks.mapping",
                "map the standard synthetic scenes on a wall-clock budget and evaluate the maps"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        bench_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Imported only when the bench verb runs; a benchmark whose module is missing from this
        # build stays listed and says so when chosen, instead of breaking the others.
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            bench_parser.set_defaults(unavailable=str(error))
            continue
        module.add_arguments(bench_parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "unavailable", None):
        print(f"dsac-ros bench {args.benchmark}: not available in this build ({args.unavailable})", file=sys.stderr)
        return 2
    module_name, _ = BENCHMARKS[args.benchmark]
    return int(importlib.import_module(module_name).run(args) or 0)
