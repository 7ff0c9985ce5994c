"""Benchmark of the synthetic data: renderer speed and test-to-mapping proximity per standard scene.

    .venv/bin/python bench/bench_synth.py [--frames 20] [--out .cache/bench/synth.json]

Prints a table and writes JSON. Bag sizes are measured by rendering with ``dsac-ros synth``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dsac_ros.data.render import render
from dsac_ros.data.scenes import get_scene


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames rendered per scene for timing")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "synth.json")
    args = parser.parse_args()
    results = {}
    for name in ("small_room", "large_room"):
        spec = get_scene(name)
        scene, intrinsics = spec.scene(), spec.intrinsics(640, 480)
        poses = spec.poses("mapping")
        render(scene, poses[0], intrinsics)  # warm-up (texture pyramids, caches)
        chosen = poses[np.linspace(0, len(poses) - 1, args.frames).astype(int)]
        start = time.perf_counter()
        for pose in chosen:
            render(scene, pose, intrinsics)
        seconds = (time.perf_counter() - start) / len(chosen)
        results[name] = {"render_ms_640x480": 1000 * seconds, "render_fps_640x480": 1 / seconds,
                         "mapping_frames": spec.mapping_frames, "test_frames": spec.test_frames,
                         **spec.proximity()}
    print(f"{'scene':<12} {'fps':>6} {'ms':>7} {'map':>5} {'test':>5} {'med m':>7} {'p90 m':>7} {'med deg':>8} {'p90 deg':>8}")
    for name, r in results.items():
        print(f"{name:<12} {r['render_fps_640x480']:6.1f} {r['render_ms_640x480']:7.1f} {r['mapping_frames']:5d} "
              f"{r['test_frames']:5d} {r['median_distance_m']:7.3f} {r['p90_distance_m']:7.3f} "
              f"{r['median_angle_deg']:8.1f} {r['p90_angle_deg']:8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
