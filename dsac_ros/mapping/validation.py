"""Pose errors of held-out mapping frames during a run."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dsac_ros.camera import Intrinsics
from dsac_ros.dsac import RansacOptions
from dsac_ros.evaluation import FrameRecord, compute_metrics, covariance_scale
from dsac_ros.head_training import head_forward_flat
from dsac_ros.localizer import localize_coordinates
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
    records: list[FrameRecord] = []
    was_training = head.training
    head.eval()
    with torch.no_grad():
        for index, (features, pixels, intrinsics, pose) in enumerate(frames):
            coords = head_forward_flat(head, features.to(device=device, dtype=torch.float32)) + center
            records.append(_validation_record(pixels, coords, intrinsics, pose, hypotheses, index))
    head.train(was_training)
    return summarize_records(records)


def _validation_record(pixels: np.ndarray, coords: torch.Tensor, intrinsics: Intrinsics, pose: np.ndarray,
                       hypotheses: int, seed: int) -> FrameRecord:
    """One held-out frame's predicted coordinates through the Localizer's DSAC step (argmax, fixed
    seed) -> its FrameRecord (index as stamp). The buffer holds the frame's features, not its image,
    so the encoder is not run again."""
    result = localize_coordinates(coords, torch.as_tensor(pixels, device=coords.device), intrinsics,
                                  RansacOptions(hypotheses=hypotheses, seed=seed))
    return FrameRecord.from_result(result, pose, seed)


# What a validation keeps of ``compute_metrics`` (it is stored every few seconds of a run).
VALIDATION_KEYS = ("frames", "pct_5cm_5deg", "median_translation_cm", "median_rotation_deg")


def summarize_records(records: list[FrameRecord]) -> dict[str, Any]:
    """Median errors (None when the median frame failed) and percent within 5 cm / 5 deg, by
    ``evaluation.compute_metrics``: the one implementation of the relocalisation metrics."""
    if not records:
        return {}
    metrics = compute_metrics(records)
    summary = {key: metrics[key] for key in VALIDATION_KEYS}
    # The factor the localizer applies to this map's covariances (dsac_ros.localizer): the held-out
    # frames' errors against the inlier-residual covariance (small_room: about 45).
    summary["covariance_scale"] = covariance_scale(records)
    return summary


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
    records: list[FrameRecord] = []
    was_training = network.training
    network.eval()
    with torch.no_grad():
        for seed, i in enumerate(picks):
            view = make_view(validation.gray[i], validation.image_sizes[i], None, options.augmentation,
                             options.normalization)
            coords = network(view.tensor.to(device))[0].reshape(3, -1).T
            records.append(_validation_record(view.pixels_xy, coords, validation.intrinsics[i],
                                              validation.world_T_cam[i], 64, seed))
    network.train(was_training)
    return summarize_records(records)
