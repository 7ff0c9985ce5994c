"""The classical baseline a user would pick instead (issue 15): SIFT + retrieval + PoseLib.

    map:       SIFT keypoints of every mapping frame (OpenCV), lifted to world points with the
               frame's depth and pose (rgbd), or triangulated between each frame and its nearest
               mapping neighbours by pose (rgb: ratio-tested matches, cheirality and reprojection
               checked); a visual vocabulary (faiss k-means) and one tf-idf histogram per frame.
    localise:  SIFT of the query, the ``retrieve`` most similar mapping frames by histogram,
               nearest-neighbour matching with Lowe's ratio test against those frames' points,
               PoseLib LO-RANSAC (P3P, non-linear refinement) on the 2D-3D matches.

Everything is exact brute force on the retrieved frames (faiss), so its cost per frame is the
SIFT extraction plus a few thousand-by-few-thousand descriptor products.

    dsac-ros bench classical [--scenes small_room,large_room] [--modes rgbd,rgb]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "classical.json"
RATIO = 0.8               # Lowe's ratio test
VOCABULARY_WORDS = 256    # k-means words of the retrieval histogram
INLIER_THRESHOLD_PX = 8.0  # PoseLib's max reprojection error at 640 x 480
MIN_INLIERS = 20


@dataclass
class ClassicalMap:
    """Per mapping frame: descriptors (n_i, 128) float32 and world points (n_i, 3) float64 of the
    keypoints that have one; the vocabulary (W, 128) and frame histograms (F, W), unit L2."""

    descriptors: list[np.ndarray] = field(default_factory=list)
    points_world: list[np.ndarray] = field(default_factory=list)
    vocabulary: Optional[np.ndarray] = None
    idf: Optional[np.ndarray] = None
    histograms: Optional[np.ndarray] = None

    @property
    def size_bytes(self) -> int:
        """Stored as uint8 descriptors (SIFT's own range) and float32 points, as a user would."""
        points = sum(len(p) for p in self.points_world)
        return points * (128 + 12) + (0 if self.histograms is None else self.histograms.nbytes + self.vocabulary.nbytes)

    @property
    def points(self) -> int:
        return sum(len(p) for p in self.points_world)


def sift(image_rgb: np.ndarray, features: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> keypoints (n, 2) float64 pixels, descriptors (n, 128) float32."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY)
    keypoints, descriptors = cv2.SIFT_create(nfeatures=features).detectAndCompute(gray, None)
    if descriptors is None:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    return np.array([k.pt for k in keypoints], dtype=np.float64), descriptors.astype(np.float32)


def _ratio_matches(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (query, key) of matches passing the ratio test (exact L2, faiss)."""
    import faiss

    if len(queries) == 0 or len(keys) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    distances, index = faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(keys), 2)
    keep = distances[:, 0] < (RATIO ** 2) * distances[:, 1]  # squared L2 distances
    return np.nonzero(keep)[0], index[keep, 0]


def _lift_rgbd(frame, keypoints_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points of keypoints with valid depth: (valid mask (n,), points (m, 3))."""
    from dsac_ros.geometry import transform_points
    from dsac_ros.network import backproject_depth_at

    points_cam, valid = backproject_depth_at(np.asarray(frame.depth_m), frame.intrinsics, keypoints_xy)
    return valid, transform_points(frame.world_T_cam, points_cam[valid])


def _triangulate_rgb(frames: Sequence, features: list[tuple[np.ndarray, np.ndarray]], index: int,
                     partners: int, max_error_px: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of frame ``index`` triangulated with its ``partners`` nearest frames by camera
    position: the first partner whose match gives a point with positive depth in both views and
    reprojection error below max_error_px in both wins. Returns (valid (n,), points (m, 3))."""
    import cv2

    from dsac_ros.geometry import transform_points

    frame = frames[index]
    keypoints, descriptors = features[index]
    positions = np.array([f.world_T_cam[:3, 3] for f in frames])
    distance = np.linalg.norm(positions - positions[index], axis=1)
    distance[index] = np.inf
    found = np.zeros(len(keypoints), dtype=bool)
    points_world = np.full((len(keypoints), 3), np.nan)
    for partner in np.argsort(distance)[:partners]:
        other = frames[partner]
        baseline_m = float(distance[partner])
        if baseline_m < 0.02:
            continue
        q, k = _ratio_matches(descriptors, features[partner][1])
        todo = ~found[q]
        q, k = q[todo], k[todo]
        if len(q) == 0:
            continue
        projections = [f.intrinsics.K @ np.linalg.inv(f.world_T_cam)[:3] for f in (frame, other)]
        homogeneous = cv2.triangulatePoints(projections[0], projections[1], keypoints[q].T,
                                            features[partner][0][k].T)
        world = (homogeneous[:3] / homogeneous[3]).T
        ok = np.isfinite(world).all(1)
        for view, pixels in ((frame, keypoints[q]), (other, features[partner][0][k])):
            cam = transform_points(np.linalg.inv(view.world_T_cam), world)
            with np.errstate(invalid="ignore", divide="ignore"):
                projected = (view.intrinsics.K @ cam.T).T
                projected = projected[:, :2] / projected[:, 2:3]
            ok &= (cam[:, 2] > 0.05) & (np.linalg.norm(projected - pixels, axis=1) < max_error_px)
        found[q[ok]] = True
        points_world[q[ok]] = world[ok]
    return found, points_world[found]


def build_map(frames: Sequence, mode: str = "rgbd", partners: int = 4, seed: int = 0,
              sift_features: int = 2000) -> ClassicalMap:
    """SIFT (``sift_features`` per frame) of every mapping frame, lifted or triangulated, and the vocabulary."""
    import faiss

    frames = list(frames)
    features = [sift(frame.image_rgb, sift_features) for frame in frames]
    result = ClassicalMap()
    for index, (frame, (keypoints, descriptors)) in enumerate(zip(frames, features)):
        if mode == "rgbd":
            valid, points = _lift_rgbd(frame, keypoints)
        else:
            valid, points = _triangulate_rgb(frames, features, index, partners)
        result.descriptors.append(descriptors[valid])
        result.points_world.append(points)
    every = np.concatenate([d for _, d in features])
    sample = every[np.random.default_rng(seed).permutation(len(every))[:100_000]]
    kmeans = faiss.Kmeans(128, VOCABULARY_WORDS, niter=20, seed=seed, verbose=False)
    kmeans.train(np.ascontiguousarray(sample))
    result.vocabulary = kmeans.centroids
    words = [_words(result.vocabulary, d) for _, d in features]
    document_frequency = sum(np.bincount(np.unique(ws), minlength=VOCABULARY_WORDS) for ws in words)
    result.idf = np.log(len(frames) / np.maximum(document_frequency, 1)).astype(np.float32)
    result.histograms = np.stack([_histogram(ws, result.idf) for ws in words])
    return result


def _words(vocabulary: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
    import faiss

    if len(descriptors) == 0:
        return np.zeros(0, int)
    return faiss.knn(np.ascontiguousarray(descriptors), vocabulary, 1)[1][:, 0]


def _histogram(words: np.ndarray, idf: np.ndarray) -> np.ndarray:
    histogram = np.bincount(words, minlength=len(idf)).astype(np.float32) * idf
    return histogram / max(float(np.linalg.norm(histogram)), 1e-12)


def localize(classical: ClassicalMap, image_rgb: np.ndarray, intrinsics, retrieve: int = 5,
             seed: int = 0, sift_features: int = 2000) -> tuple[Optional[np.ndarray], dict[str, Any]]:
    """world_T_cam (4, 4) or None, with {"matches", "inliers", "ms": {sift, retrieve, match, pnp}}.

    retrieve: mapping frames matched (the most similar by histogram; all of them when it is at least
    the map's frame count); sift_features: SIFT keypoints of the query."""
    import poselib

    from dsac_ros.geometry import make_pose

    t0 = time.perf_counter()
    keypoints, descriptors = sift(image_rgb, sift_features)
    t1 = time.perf_counter()
    similarity = classical.histograms @ _histogram(_words(classical.vocabulary, descriptors), classical.idf)
    frames = np.argsort(-similarity)[:retrieve]
    keys = np.concatenate([classical.descriptors[f] for f in frames])
    points = np.concatenate([classical.points_world[f] for f in frames])
    t2 = time.perf_counter()
    q, k = _ratio_matches(descriptors, keys)
    t3 = time.perf_counter()
    info: dict[str, Any] = {"matches": int(len(q)), "inliers": 0}
    world_T_cam = None
    if len(q) >= 4:
        camera = {"model": "PINHOLE", "width": intrinsics.width_px, "height": intrinsics.height_px,
                  "params": [intrinsics.fx_px, intrinsics.fy_px, intrinsics.cx_px, intrinsics.cy_px]}
        pose, result = poselib.estimate_absolute_pose(keypoints[q], points[k], camera,
                                                      {"max_reproj_error": INLIER_THRESHOLD_PX, "seed": seed}, {})
        info["inliers"] = int(result.get("num_inliers", 0))
        if info["inliers"] >= MIN_INLIERS:
            world_T_cam = np.linalg.inv(make_pose(np.asarray(pose.R), np.asarray(pose.t)))
    t4 = time.perf_counter()
    info["ms"] = {"sift": (t1 - t0) * 1e3, "retrieve": (t2 - t1) * 1e3, "match": (t3 - t2) * 1e3,
                  "pnp": (t4 - t3) * 1e3, "total": (t4 - t0) * 1e3}
    return world_T_cam, info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenes", default="small_room,large_room", help="comma-separated standard scenes")
    parser.add_argument("--modes", default="rgbd,rgb", help="comma-separated: rgbd (depth-lifted), rgb (triangulated)")
    parser.add_argument("--retrieve", type=int, default=5, help="mapping frames matched per query")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-frames", type=int, default=None, help="test frames per scene (default: all)")
    parser.add_argument("--no-dsac", action="store_true",
                        help="skip the dsac_ros rows (the scene-memory maps of `dsac-ros bench frame`, made once)")
    parser.add_argument("--no-cell-grid", action="store_true",
                        help="skip the dsac_ros rows at the cell grid's precision (no sub-cell step, no depth "
                             "alignment; rgb maps by triangulated matches), kept beside the defaults for comparison")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})")


def _dsac_row(scene: str, mode: str, test: Sequence, threads: int, cell_grid: bool = False) -> dict[str, Any]:
    """dsac_ros on the same test frames, in the same run (its map made once): with defaults, or
    with ``cell_grid`` at the cell grid's precision (correspondences at cell centres, DSAC's pose
    without depth alignment, rgb maps from triangulated matches)."""
    import torch

    from dsac_ros.benchmarks.frame import scene_map
    from dsac_ros.depth_alignment import DepthAlignmentOptions
    from dsac_ros.evaluation import compute_metrics, evaluate_frames
    from dsac_ros.gate import GateSettings
    from dsac_ros.localizer import Localizer

    torch.set_num_threads(int(threads))
    map_path = scene_map(scene, "cpu", mode=mode, triangulation="matches" if cell_grid and mode == "rgb" else None)
    localizer = Localizer(map_path, device="cpu", subcell=not cell_grid,
                          depth_alignment=DepthAlignmentOptions(enabled=not cell_grid))
    records = evaluate_frames(localizer, test, use_depth=mode == "rgbd", progress=False,
                              seed_from_stamp=True, gate_settings=GateSettings())
    metrics = compute_metrics(records)
    return {"method": "dsac_ros_cell_grid" if cell_grid else "dsac_ros", "scene": scene, "mode": mode,
            "test_frames": len(test),
            "map_mb": map_path.stat().st_size / 1e6,
            **{k: metrics[k] for k in ("pct_5cm_5deg", "pct_2cm_2deg", "pct_1cm_1deg", "median_translation_cm",
                                       "median_rotation_deg")},
            "ms_median": {"total": metrics["median_ms_total"]}, "ms_p95_total": metrics["p95_ms_total"]}


def _print_row(row: dict[str, Any]) -> None:
    print(f"{row['method']:<19}{row['scene']:<11}{row['mode']:<5} {row['pct_5cm_5deg']:5.1f} % 5cm/5°  "
          f"{row['pct_2cm_2deg']:5.1f} % 2cm/2°  {row['pct_1cm_1deg']:5.1f} % 1cm/1°  median "
          f"{row['median_translation_cm']:.2f} cm {row['median_rotation_deg']:.2f}°  "
          f"{row['ms_median']['total']:.0f} ms/frame  map {row['map_mb']:.1f} MB", flush=True)


def run(args: argparse.Namespace) -> int:
    import cv2
    import faiss

    from dsac_ros.benchmarks.cameras import scene_bags
    from dsac_ros.data import read_frames
    from dsac_ros.evaluation import FrameRecord, compute_metrics

    cv2.setNumThreads(int(args.threads))
    faiss.omp_set_num_threads(int(args.threads))
    rows = []
    for scene in [s for s in args.scenes.split(",") if s]:
        bags = scene_bags(scene)
        mapping = list(read_frames(bags["mapping"]))
        test = list(read_frames(bags["test"]))[: args.max_frames]
        for mode in [m for m in args.modes.split(",") if m]:
            started = time.perf_counter()
            classical = build_map(mapping, mode)
            map_s = time.perf_counter() - started
            records, stage_ms = [], []
            for frame in test:
                world_T_cam, info = localize(classical, frame.image_rgb, frame.intrinsics, args.retrieve)
                records.append(FrameRecord(frame.stamp_ns, world_T_cam, frame.world_T_cam, {"total": info["ms"]["total"]},
                                           frame.name))
                stage_ms.append(info["ms"])
            metrics = compute_metrics(records)
            row = {"scene": scene, "mode": mode, "mapping_frames": len(mapping), "test_frames": len(test),
                   "map_seconds": map_s, "map_points": classical.points, "map_mb": classical.size_bytes / 1e6,
                   "points_per_frame": classical.points / max(len(mapping), 1),
                   **{k: metrics[k] for k in ("pct_5cm_5deg", "pct_2cm_2deg", "pct_1cm_1deg", "median_translation_cm",
                                              "median_rotation_deg")},
                   "ms_median": {stage: float(np.median([m[stage] for m in stage_ms])) for stage in stage_ms[0]},
                   "ms_p95_total": float(np.percentile([m["total"] for m in stage_ms], 95))}
            row["method"] = "sift_poselib"
            rows.append(row)
            print(f"{'sift+poselib':<19}{scene:<11}{mode:<5} {row['pct_5cm_5deg']:5.1f} % 5cm/5°  {row['pct_2cm_2deg']:5.1f} % 2cm/2°  "
                  f"{row['pct_1cm_1deg']:5.1f} % 1cm/1°  median {row['median_translation_cm']:.2f} cm "
                  f"{row['median_rotation_deg']:.2f}°  {row['ms_median']['total']:.0f} ms/frame "
                  f"(sift {row['ms_median']['sift']:.0f})  map {row['map_mb']:.1f} MB ({row['map_points']} points, "
                  f"{map_s:.0f} s)", flush=True)
            if not args.no_dsac:
                for cell_grid in (False,) if args.no_cell_grid else (False, True):
                    rows.append(_dsac_row(scene, mode, test, args.threads, cell_grid))
                    _print_row(rows[-1])
    out = {"retrieve": args.retrieve, "threads": args.threads, "ratio": RATIO, "vocabulary_words": VOCABULARY_WORDS,
           "inlier_threshold_px": INLIER_THRESHOLD_PX, "min_inliers": MIN_INLIERS,
           "load_average_1min_end": os.getloadavg()[0], "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"JSON: {args.out}")
    return 0
