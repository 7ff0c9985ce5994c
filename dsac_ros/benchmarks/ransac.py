"""RANSAC benchmark: this DSAC against PoseLib (LO-RANSAC) and OpenCV (USAC_MAGSAC).

All methods solve the same generated problems: a 640x480 camera, a 60x80 grid of pixels
(cell centres 8x+4, 8y+4 as a stride-8 network predicts them), depths of 2..6 m, 1 px Gaussian
pixel noise, and a fraction of scene coordinates replaced by outliers (random points in the
camera's frustum at random depths: plausible but wrong predictions). Reported per method and
outlier ratio: success within 5 cm / 5 deg, median errors, median and p95 time per problem.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dsac_ros.camera import Intrinsics
from dsac_ros.geometry import make_pose, pose_errors, rotation_from_axis_angle

DEFAULT_JSON = Path("bench/results/ransac.json")
OUTLIER_RATIOS = (0.2, 0.5, 0.7)
INLIER_THRESHOLD_PX = 10.0


@dataclass
class Problem:
    """One generated 2D-3D problem with a known pose.

    pixels_xy (N, 2) px; coords_world (N, 3) m (outliers included); coords_cam (N, 3) m: the true
    camera-frame points (what depth would measure); outlier (N,) bool; world_T_cam (4, 4).
    """

    pixels_xy: np.ndarray
    coords_world: np.ndarray
    coords_cam: np.ndarray
    outlier: np.ndarray
    world_T_cam: np.ndarray
    intrinsics: Intrinsics
    grid_hw: tuple[int, int]


def default_intrinsics() -> Intrinsics:
    # Principal point deliberately off-centre: nothing may assume cx = W / 2.
    return Intrinsics(525.0, 523.0, 323.7, 236.2, 640, 480)


def make_problem(rng: np.random.Generator, outlier_ratio: float, intrinsics: Intrinsics | None = None,
                 grid_hw: tuple[int, int] = (60, 80), stride_px: int = 8, noise_px: float = 1.0,
                 depth_range_m: tuple[float, float] = (2.0, 6.0), cam_noise_m: float = 0.0) -> Problem:
    """Generate one problem; the same rng state gives the same problem.

    cam_noise_m: Gaussian noise (m) added to the returned coords_cam, as a depth sensor would measure them.
    """
    intrinsics = default_intrinsics() if intrinsics is None else intrinsics
    height, width = grid_hw
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pixels = np.stack([stride_px * xs + stride_px / 2, stride_px * ys + stride_px / 2], -1).reshape(-1, 2).astype(np.float64)
    n = pixels.shape[0]
    fx, fy, cx, cy = intrinsics.as_tuple()

    def backproject(pix, depth):
        return np.stack([(pix[:, 0] - cx) / fx * depth, (pix[:, 1] - cy) / fy * depth, depth], -1)

    depth = rng.uniform(*depth_range_m, size=n)
    # The true point projects to the pixel plus noise: the observation is off by noise_px.
    coords_cam = backproject(pixels + rng.normal(0.0, noise_px, size=(n, 2)), depth)
    rotation = rotation_from_axis_angle(rng.normal(size=3) * 1.0)
    world_T_cam = make_pose(rotation, rng.uniform(-3.0, 3.0, size=3))
    coords_world = coords_cam @ world_T_cam[:3, :3].T + world_T_cam[:3, 3]
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, size=int(round(outlier_ratio * n)), replace=False)] = True
    k = int(outlier.sum())
    wrong_pixels = np.stack([rng.uniform(0, intrinsics.width_px, k), rng.uniform(0, intrinsics.height_px, k)], -1)
    wrong_cam = backproject(wrong_pixels, rng.uniform(*depth_range_m, size=k))
    coords_world[outlier] = wrong_cam @ world_T_cam[:3, :3].T + world_T_cam[:3, 3]
    if cam_noise_m > 0:
        coords_cam = coords_cam + rng.normal(0.0, cam_noise_m, size=coords_cam.shape)
    return Problem(pixels, coords_world, coords_cam, outlier, world_T_cam, intrinsics, grid_hw)


# --------------------------------------------------------------------------------------------
# methods: each takes a Problem and returns world_T_cam (4, 4) or None
# --------------------------------------------------------------------------------------------

def dsac_method(hypotheses: int) -> Callable[[Problem, int], np.ndarray | None]:
    import torch

    from dsac_ros.dsac import RansacOptions, estimate_pose

    def run(problem: Problem, seed: int) -> np.ndarray | None:
        options = RansacOptions(hypotheses=hypotheses, inlier_threshold_px=INLIER_THRESHOLD_PX, seed=seed)
        # float32 inputs, as the localizer gets them from the network.
        estimate, _ = estimate_pose(torch.from_numpy(problem.pixels_xy).float(),
                                    torch.from_numpy(problem.coords_world).float(), problem.intrinsics, options)
        return estimate.world_T_cam if estimate.success else None

    return run


def poselib_method(problem: Problem, seed: int) -> np.ndarray | None:
    import poselib

    intr = problem.intrinsics
    camera = {"model": "PINHOLE", "width": intr.width_px, "height": intr.height_px,
              "params": [intr.fx_px, intr.fy_px, intr.cx_px, intr.cy_px]}
    pose, info = poselib.estimate_absolute_pose(problem.pixels_xy, problem.coords_world, camera,
                                                {"max_reproj_error": INLIER_THRESHOLD_PX, "seed": seed}, {})
    if info.get("num_inliers", 0) < 4:
        return None
    cam_T_world = make_pose(np.asarray(pose.R), np.asarray(pose.t))
    return np.linalg.inv(cam_T_world)


def opencv_magsac_method(problem: Problem, seed: int) -> np.ndarray | None:
    import cv2

    cv2.setRNGSeed(seed)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        problem.coords_world, problem.pixels_xy, problem.intrinsics.K, None,
        iterationsCount=10000, reprojectionError=INLIER_THRESHOLD_PX, confidence=0.9999, flags=cv2.USAC_MAGSAC)
    if not ok or inliers is None or len(inliers) < 4:
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    return np.linalg.inv(make_pose(rotation, tvec.reshape(3)))


def methods() -> list[tuple[str, int, Callable[[Problem, int], np.ndarray | None]]]:
    """(method, hypotheses, function); hypotheses 0 where the method chooses adaptively."""
    return [("dsac", 64, dsac_method(64)), ("dsac", 256, dsac_method(256)),
            ("poselib", 0, poselib_method), ("opencv_magsac", 0, opencv_magsac_method)]


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------

def _finite_or_none(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def run_benchmark(problems: int = 100, outlier_ratios=OUTLIER_RATIOS, seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> list[dict]:
    """All methods on the same problems; one row per (method, hypotheses, outlier ratio)."""
    all_methods = methods()
    # Warm-up: first calls pay for imports, allocator and thread pool start-up.
    warm = make_problem(np.random.default_rng(12345), 0.5)
    for _, _, function in all_methods:
        function(warm, 0)
    rows = []
    for ratio in outlier_ratios:
        generated = [make_problem(np.random.default_rng([seed, int(round(ratio * 100)), i]), ratio) for i in range(problems)]
        translation_cm = np.full((len(all_methods), problems), math.inf)
        rotation_deg = np.full((len(all_methods), problems), math.inf)
        times_ms = np.zeros((len(all_methods), problems))
        # Problem-major order: every method meets the same background load on a shared machine.
        for index, problem in enumerate(generated):
            for m, (_, _, function) in enumerate(all_methods):
                start = time.perf_counter()
                world_T_cam = function(problem, index)
                times_ms[m, index] = (time.perf_counter() - start) * 1e3
                if world_T_cam is not None and np.all(np.isfinite(world_T_cam)):
                    t_err_m, r_err_deg = pose_errors(world_T_cam, problem.world_T_cam)
                    translation_cm[m, index], rotation_deg[m, index] = 100.0 * float(t_err_m), float(r_err_deg)
        for m, (name, hypotheses, _) in enumerate(all_methods):
            success = (translation_cm[m] <= 5.0) & (rotation_deg[m] <= 5.0)
            row = {
                "method": name, "hypotheses": hypotheses, "outlier_ratio": ratio, "problems": problems,
                "success_5cm_5deg_pct": round(100.0 * float(success.mean()), 2),
                "median_translation_cm": _finite_or_none(np.median(translation_cm[m])),
                "median_rotation_deg": _finite_or_none(np.median(rotation_deg[m])),
                "median_ms": round(float(np.median(times_ms[m])), 3),
                "p95_ms": round(float(np.percentile(times_ms[m], 95)), 3),
            }
            rows.append(row)
            if progress:
                progress(format_row(row))
    return rows


HEADER = f"{'method':<14}{'hyps':>5}{'outl%':>7}{'n':>5}{'succ%':>8}{'med cm':>9}{'med deg':>9}{'med ms':>9}{'p95 ms':>9}"


def format_row(row: dict) -> str:
    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"
    return (f"{row['method']:<14}{row['hypotheses'] or '-':>5}{100 * row['outlier_ratio']:>7.0f}{row['problems']:>5}"
            f"{row['success_5cm_5deg_pct']:>8.1f}{number(row['median_translation_cm'], 3):>9}"
            f"{number(row['median_rotation_deg'], 4):>9}{row['median_ms']:>9.2f}{row['p95_ms']:>9.2f}")


def format_table(rows: list[dict]) -> str:
    return "\n".join([HEADER, "-" * len(HEADER)] + [format_row(r) for r in rows])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output JSON file (default {DEFAULT_JSON})")
    parser.add_argument("--problems", type=int, default=100, help="problems per outlier ratio (default 100)")
    parser.add_argument("--outlier-ratios", type=float, nargs="+", default=list(OUTLIER_RATIOS),
                        help="outlier ratios in [0, 1) (default 0.2 0.5 0.7)")
    parser.add_argument("--seed", type=int, default=0, help="problem generator seed")
    # One thread by default: PoseLib is single-threaded, and on a shared 2-core CPU torch's thread
    # pool costs more in synchronisation than it gains on per-frame RANSAC-sized tensors.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; default 1)")


def run(args: argparse.Namespace) -> int:
    import torch

    previous_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        print(f"RANSAC benchmark: {args.problems} problems per outlier ratio, 60x80 grid, 640x480, 1 px noise; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
        print(HEADER)
        print("-" * len(HEADER))
        rows = run_benchmark(args.problems, tuple(args.outlier_ratios), args.seed, progress=print)
    finally:
        torch.set_num_threads(previous_threads)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0
