#!/usr/bin/env python3
"""`make bench`: every benchmark under bench/, one after another (JSON in bench/results/).

Pass names to run a subset: `make bench BENCH="ransac localizer"`. The mapping benchmark takes
about 10 minutes per scene and mode on this CPU; it runs last.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = {
    "synth": ["bench/bench_synth.py"],
    "ransac": ["bench/bench_ransac.py", "--json", "bench/results/ransac.json"],
    "localizer": ["bench/bench_localizer.py"],
    "node": ["bench/bench_node.py"],
    "mapping": ["bench/bench_mapping.py"],
    "tolerances": ["bench/bench_tolerances.py"],
}


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
        result = subprocess.run([sys.executable, *BENCHMARKS[name]], cwd=REPO)
        print(f"   [{time.monotonic() - start:.0f} s, exit {result.returncode}]", flush=True)
        if result.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
