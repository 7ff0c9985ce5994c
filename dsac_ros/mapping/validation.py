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
from dsac_ros.memory_head import strided_lookup
from dsac_ros.mapping.frames import FrameRecordSet, MappingBuffer
from dsac_ros.mapping.options import MappingOptions
from dsac_ros.mapping.views import make_view
from dsac_ros.network import Head, SceneCoordinateNetwork
from dsac_ros.subcell import grid_layout


def memory_frame_centres_m(data: MappingBuffer, frames: int) -> torch.Tensor:
    """(F, 3) camera centres of the memory's frames (NaN for a frame without a plain view)."""
    centres = torch.full((frames, 3), float("nan"))
    for view, frame, _, _ in data.plain_views():
        cam_T_world = data.buffer.cam_T_world[view].double()
        centres[frame] = (-cam_T_world[:3, :3].T @ cam_T_world[:3, 3]).float()
    return centres


# Real errors have heavier tails than a Gaussian's: on the 7-Scenes split the test NEES q95 was 5-8 times
# its median (chi-square(6): 2.4). Calibrating the 90 % quantile (robust to 2 gross errors in 20
# frames) instead of the median puts the 95 % ellipsoid where it holds what it promises.
COVARIANCE_QUANTILE = 0.9


def validate_head(head: Head, data: MappingBuffer, device: torch.device, max_frames: int = 10,
                  hypotheses: int = 64, hide_within_m: float = 0.0) -> dict[str, Any]:
    """Median pose error of held-out mapping frames (plain features, argmax DSAC, fixed seeds).

    hide_within_m: memory heads, a held-out frame's lookup never retrieves memory frames whose
    camera lies within this distance of its own, so it meets the memory as a test view does (a
    test view of a recording lies some 10 cm from its nearest mapping view; a held-out mapping
    frame's temporal neighbours are closer), and the covariance calibrated on it is as wide."""
    if not data.validation:
        return {}
    frames = data.validation[:: max(1, len(data.validation) // max_frames)][:max_frames]
    centres = memory_frame_centres_m(data, int(head.frames)) if hide_within_m > 0 and hasattr(head, "retrieve") \
        else None
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32, device=device).view(1, 3)
    records: list[FrameRecord] = []
    was_training = head.training
    head.eval()
    with torch.no_grad():
        for index, (features, pixels, intrinsics, pose) in enumerate(frames):
            if centres is not None:
                position = torch.as_tensor(np.asarray(pose)[:3, 3], dtype=torch.float32)
                head.hidden_frames = (centres - position).norm(dim=1) < hide_within_m  # NaN: False
            features = features.to(device=device, dtype=torch.float32)
            layout = grid_layout(torch.as_tensor(pixels, dtype=torch.float64))
            if int(getattr(head, "key_stride", 1)) > 1 and layout is not None:
                # As the localizer looks up such a map: the sub-grid's queries, placed on the full grid.
                (height, width), cell_px = layout
                offsets, grid_xy, _ = strided_lookup(head, features.reshape(height, width, -1))
                coords = offsets + center
                pixels = np.asarray(pixels)[0] + grid_xy.double().cpu().numpy() * cell_px.numpy()
            else:
                coords = head_forward_flat(head, features) + center
            records.append(_validation_record(pixels, coords, intrinsics, pose, hypotheses, index))
    if centres is not None:
        head.hidden_frames = None
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
    # frames' errors against the inlier-residual covariance, at the NEES quantile COVARIANCE_QUANTILE.
    summary["covariance_scale"] = covariance_scale(records, COVARIANCE_QUANTILE)
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
