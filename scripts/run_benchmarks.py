#!/usr/bin/env python3
"""`make bench`: every benchmark of dsac_ros.benchmarks.BENCHMARKS, one after another (JSON in bench/results/).

Pass names to run a subset: `make bench BENCH="ransac localizer"`. The mapping benchmark takes
about 10 minutes per scene and mode on this CPU, the tolerance audit about 10 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from dsac_ros.benchmarks import BENCHMARKS, script_path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    names = sys.argv[1:] or os.environ.get("BENCH", "").split() or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n== bench {name}", flush=True)
        start = time.monotonic()
        result = subprocess.run([sys.executable, script_path(name), *BENCHMARKS[name].make_args], cwd=REPO)
        print(f"   [{time.monotonic() - start:.0f} s, exit {result.returncode}]", flush=True)
        if result.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
