#!/usr/bin/env python3
"""Where the time of one 640x480 localisation goes: network vs DSAC, per input height and threads.

Two measurements:
1. ``localize`` end to end with the CPU default network ("fast") on rendered small_room frames.
   The network runs for real (its weights do not change its cost), but DSAC gets the scene
   coordinates a trained map would give: ground truth from the rendered depth at the cell
   centres, with noise on the inliers and a fraction of outliers. A second row feeds DSAC the
   untrained network's own output (a lost frame: the worst case for sampling).
2. The network's forward pass alone for every named architecture.

Writes bench/results/localizer.json and prints a table. Machine load is recorded: the 2 cores
are often shared, and numbers under load are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


from dsac_ros.data.scenes import get_scene
from dsac_ros.dsac import RansacOptions
from dsac_ros.geometry import pose_errors, transform_points
from dsac_ros.localizer import Localizer
from dsac_ros.mapfile import SceneMap
from dsac_ros.network import (NETWORK_CONFIGS, backproject_depth_at, build_network,
                              prepare_input)

RESULTS = Path(__file__).resolve().parent / "results" / "localizer.json"


class OracleLocalizer(Localizer):
    """Runs the real network, then hands DSAC simulated predictions of a trained map."""

    def __init__(self, *args, inlier_fraction: float, noise_m: float, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.inlier_fraction, self.noise_m = inlier_fraction, noise_m
        self.rng = np.random.default_rng(seed)
        self.frame = None
        self._cache: dict = {}

    def predict(self, image_rgb):
        coords, pixels_xy, grid = super().predict(image_rgb)
        if self.inlier_fraction is None:
            return coords, pixels_xy, grid
        key = (self.frame.name, pixels_xy.shape[0])
        if key not in self._cache:  # prepared once per frame, outside the timed path's cost
            points_cam, valid = backproject_depth_at(self.frame.depth_m, self.frame.intrinsics, pixels_xy)
            world = transform_points(self.frame.world_T_cam, points_cam)
            world += self.rng.normal(scale=self.noise_m, size=world.shape)
            outliers = (self.rng.random(len(world)) > self.inlier_fraction) | ~valid
            low, high = world[valid].min(0), world[valid].max(0)
            world[outliers] = self.rng.uniform(low, high, size=(int(outliers.sum()), 3))
            self._cache[key] = torch.as_tensor(world, dtype=torch.float32, device=coords.device)
        return self._cache[key], pixels_xy, grid


def stats(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "mean": float(values.mean())}


def bench_end_to_end(frames, height, threads, inlier_fraction, noise_m, repeats, hypotheses):
    torch.set_num_threads(threads)
    scene_map = SceneMap(build_network("fast", (2.1, 1.7, 1.3)).eval(), input_height_px=height)
    localizer = OracleLocalizer(scene_map, device="cpu", ransac=RansacOptions(hypotheses=hypotheses),
                                inlier_fraction=inlier_fraction, noise_m=noise_m)
    rows = {"network": [], "ransac": [], "total": [], "sampling": [], "scoring": [], "refinement": [], "cpu": []}
    successes, translation_cm, rotation_deg = 0, [], []
    for frame in frames[:2]:  # warm-up
        localizer.frame = frame
        localizer.localize(frame.image_rgb, frame.intrinsics, seed=0)
    for index in range(repeats):
        frame = frames[index % len(frames)]
        localizer.frame = frame
        cpu_start = time.process_time()
        result = localizer.localize(frame.image_rgb, frame.intrinsics, seed=index)
        # CPU time of this process: with one thread, what the frame costs on an idle core.
        rows["cpu"].append((time.process_time() - cpu_start) * 1e3)
        for stage in ("network", "ransac", "total"):
            rows[stage].append(result.timings_ms[stage])
        for stage in ("sampling", "scoring", "refinement"):
            rows[stage].append(result.ransac_timings_ms.get(stage, 0.0))
        if result.success:
            successes += 1
            t_m, r_deg = pose_errors(result.world_T_cam, frame.world_T_cam)
            translation_cm.append(100 * float(t_m))
            rotation_deg.append(float(r_deg))
    return {
        "input_height_px": height, "threads": threads, "hypotheses": hypotheses,
        "predictions": "untrained network" if inlier_fraction is None else
                       f"simulated: {inlier_fraction:.0%} inliers, {100 * noise_m:.0f} cm noise",
        "correspondences": int(result.correspondences), "frames": repeats,
        "success_rate": successes / repeats,
        "median_translation_cm": float(np.median(translation_cm)) if translation_cm else None,
        "median_rotation_deg": float(np.median(rotation_deg)) if rotation_deg else None,
        "ms": {stage: stats(values) for stage, values in rows.items()},
    }


def bench_network(name, height, threads, repeats, image):
    torch.set_num_threads(threads)
    network = build_network(name).eval().to(memory_format=torch.channels_last)  # as the Localizer runs it
    prep_ms, forward_ms, forward_cpu_ms = [], [], []
    with torch.inference_mode():
        for index in range(repeats + 2):
            start = time.perf_counter()
            prepared = prepare_input(image, height)
            middle = time.perf_counter()
            cpu_start = time.process_time()
            network(prepared.tensor)
            end = time.perf_counter()
            if index >= 2:
                prep_ms.append((middle - start) * 1e3)
                forward_ms.append((end - middle) * 1e3)
                forward_cpu_ms.append((time.process_time() - cpu_start) * 1e3)
    return {"network": name, "parameters": sum(p.numel() for p in network.parameters()), "input_height_px": height,
            "threads": threads, "ms_prepare": stats(prep_ms), "ms_forward": stats(forward_ms),
            "ms_forward_cpu": stats(forward_cpu_ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="localisations per configuration")
    parser.add_argument("--frames", type=int, default=4, help="distinct rendered 640x480 frames")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--heights", type=int, nargs="+", default=[240, 480])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()
    scene = get_scene("small_room")
    frames = list(scene.render_frames("test", 640, 480, stride=max(1, scene.test_frames // args.frames)))[:args.frames]

    end_to_end = []
    for height in args.heights:
        for threads in args.threads:
            for fraction, noise in ((0.5, 0.01), (0.2, 0.02), (None, 0.0)):
                end_to_end.append(bench_end_to_end(frames, height, threads, fraction, noise, args.repeats, 64))
                row = end_to_end[-1]
                print(f"  e2e h={height} threads={threads} {row['predictions']}: total median "
                      f"{row['ms']['total']['median']:.1f} ms", file=sys.stderr, flush=True)
    networks = []
    for name in NETWORK_CONFIGS:
        for height in args.heights:
            for threads in args.threads:
                networks.append(bench_network(name, height, threads, max(5, args.repeats // 2), frames[0].image_rgb))
    torch.set_num_threads(max(args.threads))

    result = {
        "benchmark": "localizer", "image_size": [640, 480],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "end_to_end": end_to_end, "network_only": networks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"localize() of a 640x480 frame, 'fast' network, 64 hypotheses (load avg {load_before[0]:.1f} -> "
          f"{result['machine']['load_average_after'][0]:.1f} on {os.cpu_count()} cores)")
    header = (f"{'height':>6} {'thr':>3} {'predictions':<34} {'cells':>5} {'net':>6} {'ransac':>7} {'total':>7} "
              f"{'p95':>7} {'sample':>7} {'score':>6} {'refine':>6} {'cpu':>6} {'ok':>4}")
    print(header)
    print("-" * len(header))
    for row in end_to_end:
        ms = row["ms"]
        print(f"{row['input_height_px']:>6} {row['threads']:>3} {row['predictions']:<34} {row['correspondences']:>5} "
              f"{ms['network']['median']:>6.1f} {ms['ransac']['median']:>7.1f} {ms['total']['median']:>7.1f} "
              f"{ms['total']['p95']:>7.1f} {ms['sampling']['median']:>7.1f} {ms['scoring']['median']:>6.1f} "
              f"{ms['refinement']['median']:>6.1f} {ms['cpu']['median']:>6.1f} {row['success_rate']:>4.0%}")
    print("cpu = CPU time of the process per frame (all threads): with 1 thread, the cost on an idle core")
    print("\nnetwork alone (median ms; prepare = gray + resize + normalise)")
    header = f"{'network':<8} {'params':>9} {'height':>6} {'thr':>3} {'prepare':>8} {'forward':>8} {'cpu':>8}"
    print(header)
    print("-" * len(header))
    for row in networks:
        print(f"{row['network']:<8} {row['parameters']:>9} {row['input_height_px']:>6} {row['threads']:>3} "
              f"{row['ms_prepare']['median']:>8.2f} {row['ms_forward']['median']:>8.1f} "
              f"{row['ms_forward_cpu']['median']:>8.1f}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
