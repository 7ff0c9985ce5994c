"""Pose errors of held-out mapping frames during a run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dsac_ros.camera import Intrinsics
from dsac_ros.dsac import RansacOptions, estimate_pose
from dsac_ros.geometry import pose_errors
from dsac_ros.head_training import head_forward_flat
from dsac_ros.mapping.frames import FrameRecordSet, MappingBuffer
from dsac_ros.mapping.options import MappingOptions
from dsac_ros.mapping.views import make_view
from dsac_ros.network import Head, SceneCoordinateNetwork


def validate_head(head: Head, data: MappingBuffer, device: torch.device, max_frames: int = 10,
                  hypotheses: int = 64) -> dict[str, Any]:
    """Median pose error of held-out mapping frames (plain features, argmax DSAC, fixed seeds)."""
    if not data.validation:
        return {}
    frames = data.validation[:: max(1, len(data.validation) // max_frames)][:max_frames]
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32, device=device).view(1, 3)
    errors = []
    was_training = head.training
    head.eval()
    with torch.no_grad():
        for index, (features, pixels, intrinsics, pose) in enumerate(frames):
            coords = head_forward_flat(head, features.to(device=device, dtype=torch.float32)) + center
            errors.append(_pose_error(pixels, coords, intrinsics, pose, hypotheses, index))
    head.train(was_training)
    return summarize_errors(errors)


def _pose_error(pixels: np.ndarray, coords: torch.Tensor, intrinsics: Intrinsics, pose: np.ndarray,
                hypotheses: int, seed: int) -> tuple[float, float]:
    estimate, _ = estimate_pose(torch.as_tensor(pixels, device=coords.device), coords, intrinsics,
                                RansacOptions(hypotheses=hypotheses, seed=seed))
    if not estimate.success:
        return math.inf, math.inf
    t_m, r_deg = pose_errors(estimate.world_T_cam, pose)
    return float(t_m), float(r_deg)


def summarize_errors(errors: list[tuple[float, float]]) -> dict[str, Any]:
    """Median errors (None when the median frame failed) and percent within 5 cm / 5 deg."""
    if not errors:
        return {}
    array = np.asarray(errors, dtype=np.float64)
    t_sorted, r_sorted = np.sort(array[:, 0]), np.sort(array[:, 1])
    median_t, median_r = t_sorted[(len(array) - 1) // 2], r_sorted[(len(array) - 1) // 2]
    within = (array[:, 0] < 0.05) & (array[:, 1] < 5.0)
    return {"frames": len(array), "pct_5cm_5deg": 100.0 * float(within.mean()),
            "median_translation_cm": float(median_t * 100) if np.isfinite(median_t) else None,
            "median_rotation_deg": float(median_r) if np.isfinite(median_r) else None}


def format_validation(result: dict[str, Any]) -> str:
    if not result:
        return "-"
    t, r = result.get("median_translation_cm"), result.get("median_rotation_deg")
    if t is None:
        return f"val fail ({result['pct_5cm_5deg']:.0f}%)"
    return f"val {t:.1f}cm/{r:.1f}deg {result['pct_5cm_5deg']:.0f}%"


def validate_network(network: SceneCoordinateNetwork, validation: FrameRecordSet, options: MappingOptions,
                     device: torch.device, max_frames: int = 10) -> dict[str, Any]:
    """Median pose error of held-out frames with the whole network (full mode)."""
    if len(validation) == 0:
        return {}
    picks = list(range(0, len(validation), max(1, len(validation) // max_frames)))[:max_frames]
    errors = []
    was_training = network.training
    network.eval()
    with torch.no_grad():
        for seed, i in enumerate(picks):
            view = make_view(validation.gray[i], validation.image_sizes[i], None, options)
            coords = network(view.tensor.to(device))[0].reshape(3, -1).T
            errors.append(_pose_error(view.pixels_xy, coords, validation.intrinsics[i], validation.world_T_cam[i],
                                      64, seed))
    network.train(was_training)
    return summarize_errors(errors)
