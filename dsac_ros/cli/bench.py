"""``dsac-ros bench NAME``: run one benchmark (``dsac_ros.benchmarks.BENCHMARKS``), write its JSON, print its table."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

from dsac_ros.benchmarks import BENCHMARKS, script_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, benchmark in BENCHMARKS.items():
        # argparse %-formats help strings (not descriptions): a literal "%" in a help must be doubled.
        bench_parser = sub.add_parser(name, help=benchmark.help.replace("%", "%%"), description=benchmark.help)
        if benchmark.module is None:
            # A bench/ script: its own options, passed through.
            bench_parser.add_argument("script_args", nargs=argparse.REMAINDER, help=f"options of {script_path(name)}")
            continue
        # Imported only when the bench verb runs; a benchmark whose module is missing from this
        # build stays listed and says so when chosen, instead of breaking the others.
        try:
            module = importlib.import_module(benchmark.module)
        except ModuleNotFoundError as error:
            bench_parser.set_defaults(unavailable=str(error))
            continue
        module.add_arguments(bench_parser)


def run(args: argparse.Namespace) -> int:
    benchmark = BENCHMARKS[args.benchmark]
    if getattr(args, "unavailable", None):
        print(f"dsac-ros bench {args.benchmark}: not available in this build ({args.unavailable})", file=sys.stderr)
        return 2
    if benchmark.module is None:
        script = REPO_ROOT / script_path(args.benchmark)
        if not script.is_file():
            print(f"dsac-ros bench {args.benchmark}: needs a source checkout ({script_path(args.benchmark)})",
                  file=sys.stderr)
            return 2
        return subprocess.run([sys.executable, str(script), *args.script_args], cwd=REPO_ROOT).returncode
    return int(importlib.import_module(benchmark.module).run(args) or 0)
