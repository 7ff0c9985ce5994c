"""What loses on real images, measured on one memory map (``dsac-ros bench real --ablation``).

Per row, RGB queries through the node's gate, and the correspondences themselves: each query
cell's map coordinate against the coordinate its pixel shows (registered depth + ground-truth pose).
  - retrieval: the learned frame descriptor's top k against an oracle that retrieves the mapping
    frames whose stored points the query's ground-truth view sees most (covisibility: projected
    inside the image and within 5 cm of its registered depth);
  - the sub-cell / fine-grid placement of matches on and off.
Map-level choices (input resolution, key stride, keyframes, the end-to-end stage) are rows of
``bench real`` with ``--map-option``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

COVISIBLE_DEPTH_M = 0.05


def frame_points(head, center: torch.Tensor) -> list[np.ndarray]:
    """World points (n_f, 3) of each memory frame's known cells (compact or dense memory)."""
    if hasattr(head, "frame_start"):
        starts = head.frame_start.tolist()
        return [(head.values[a:b].detach() + center).double().numpy() for a, b in zip(starts[:-1], starts[1:])]
    return [(head.values[f][head.valid[f]].detach() + center).double().numpy() for f in range(head.frames)]


def oracle_frames(frame, points: list[np.ndarray], k: int) -> torch.Tensor:
    """(k,) memory frames whose points the frame's ground-truth view sees most (needs registered depth)."""
    intrinsics = frame.intrinsics
    cam_T_world = np.linalg.inv(frame.world_T_cam)
    counts = []
    for world in points:
        cam = world @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
        z = cam[:, 2]
        front = z > 0.1
        x = np.rint(intrinsics.fx_px * cam[front, 0] / z[front] + intrinsics.cx_px).astype(int)
        y = np.rint(intrinsics.fy_px * cam[front, 1] / z[front] + intrinsics.cy_px).astype(int)
        inside = (x >= 0) & (x < intrinsics.width_px) & (y >= 0) & (y < intrinsics.height_px)
        observed = frame.depth_m[y[inside], x[inside]]
        counts.append(int(((observed > 0) & (np.abs(observed - z[front][inside]) < COVISIBLE_DEPTH_M)).sum()))
    return torch.as_tensor(np.argsort(-np.asarray(counts), kind="stable")[:k])


def correspondence_errors_m(localizer, frame, retrieve_frames: int, subcell: bool) -> np.ndarray:
    """(m,) distances between each cell's map coordinate and the point its pixel shows (valid depth only)."""
    from dsac_ros.network import backproject_depth_at

    coords, pixels_xy, _ = localizer.predict(frame.image_rgb, retrieve_frames=retrieve_frames, subcell=subcell)
    points_cam, valid = backproject_depth_at(frame.depth_m, frame.intrinsics, pixels_xy)
    truth = points_cam @ frame.world_T_cam[:3, :3].T + frame.world_T_cam[:3, 3]
    return np.linalg.norm(coords.double().cpu().numpy() - truth, axis=1)[valid]


def ablation_row(localizer, test: Sequence, name: str, retrieve_frames: int = 8, oracle: bool = False,
                 subcell: bool = True) -> dict[str, Any]:
    from dsac_ros.evaluation import FrameRecord, compute_metrics
    from dsac_ros.frame import stamp_seed
    from dsac_ros.gate import GateSettings

    head = localizer.network.head
    points = frame_points(head, localizer.network.scene_center_m.reshape(1, 3)) if oracle else None
    records, errors = [], []
    try:
        for frame in test:
            if oracle:  # this frame's lookups can retrieve the oracle's frames only
                head.hidden_frames = torch.ones(head.frames, dtype=torch.bool)
                head.hidden_frames[oracle_frames(frame, points, retrieve_frames)] = False
            errors.append(correspondence_errors_m(localizer, frame, retrieve_frames, subcell))
            result = localizer.localize(frame.image_rgb, frame.intrinsics, retrieve_frames=retrieve_frames,
                                        subcell=subcell, seed=stamp_seed(frame.stamp_ns))
            record = FrameRecord.from_result(result, frame.world_T_cam, frame.stamp_ns, frame.name)
            record.apply_gate(result, GateSettings())
            records.append(record)
    finally:
        head.hidden_frames = None
    metrics = compute_metrics(records)
    every = np.concatenate(errors) if errors else np.zeros(0)
    return {"row": name, **image_quality_split(test, records), "retrieve_frames": retrieve_frames, "oracle_retrieval": oracle, "subcell": subcell,
            **{k: metrics[k] for k in ("pct_5cm_5deg", "pct_2cm_2deg", "pct_1cm_1deg", "median_translation_cm")},
            "correspondences_within_5cm_pct": 100.0 * float((every < 0.05).mean()) if len(every) else None,
            "correspondences_within_10cm_pct": 100.0 * float((every < 0.10).mean()) if len(every) else None,
            "correspondence_median_cm": 100.0 * float(np.median(every)) if len(every) else None}


def image_quality_split(test: Sequence, records: Sequence) -> dict[str, Any]:
    """% within 5 cm / 5 deg and 2 cm / 2 deg in the blurriest quarter of the frames (variance of the
    Laplacian) and the darkest and brightest quarters (mean grey), against all frames."""
    import cv2

    from dsac_ros.evaluation import compute_metrics

    grey = [cv2.cvtColor(frame.image_rgb, cv2.COLOR_RGB2GRAY) for frame in test]
    sharpness = np.array([cv2.Laplacian(g, cv2.CV_64F).var() for g in grey])
    brightness = np.array([g.mean() for g in grey])
    quarter = max(1, len(test) // 4)

    def within(indices) -> list[float]:
        metrics = compute_metrics([records[i] for i in indices])
        return [metrics["pct_5cm_5deg"], metrics["pct_2cm_2deg"]]

    return {"blurriest_quarter_pct_5cm_2cm": within(np.argsort(sharpness)[:quarter]),
            "darkest_quarter_pct_5cm_2cm": within(np.argsort(brightness)[:quarter]),
            "brightest_quarter_pct_5cm_2cm": within(np.argsort(-brightness)[:quarter])}


def ablation_rows(map_path, test: Sequence, threads: int, rows: Optional[Sequence[tuple]] = None
                  ) -> list[dict[str, Any]]:
    """The table: (name, retrieve_frames, oracle, subcell) per row, on one map."""
    from dsac_ros.localizer import Localizer

    torch.set_num_threads(int(threads))
    localizer = Localizer(map_path, device="cpu")
    rows = rows or (("learned retrieval, 8 frames", 8, False, True),
                    ("learned retrieval, 32 frames", 32, False, True),
                    ("oracle retrieval, 8 frames", 8, True, True),
                    ("learned, 8 frames, matches at cell centres", 8, False, False))
    table = []
    for name, frames, oracle, subcell in rows:
        table.append(ablation_row(localizer, test, name, frames, oracle, subcell))
        row = table[-1]
        print(f"  {name:<44} {row['pct_5cm_5deg']:5.1f} % {row['pct_2cm_2deg']:5.1f} % {row['pct_1cm_1deg']:5.1f} %  "
              f"correspondences within 5 cm {row['correspondences_within_5cm_pct']:.1f} %, median "
              f"{row['correspondence_median_cm']:.1f} cm", flush=True)
    return table
