"""The one acceptance gate: whether an estimate is published (node) or counted as published
(offline and live evaluation). A navigation stack trusts what is published, so a confident
wrong pose must stop here: measured on a room outside the project, every frame with an error
above 25 cm had 16-26 inliers and an inlier ratio of 0.01-0.02, every good frame at least 223.

``gate(result, settings)`` is pure: the same result and settings give the same answer everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dsac_ros.geometry import is_valid_pose
from dsac_ros.status import Status


@dataclass(frozen=True)
class GateSettings:
    """A pose passes with at least ``min_inliers`` inliers and an inlier ratio of at least
    ``min_inlier_ratio`` (the node's parameters of the same names; these are their defaults)."""

    min_inliers: int = 50
    min_inlier_ratio: float = 0.1


def gate(result: Any, settings: Any = GateSettings()) -> tuple[Status, str]:
    """(status, reason) for a ``LocalizationResult``-like result: OK with an empty reason, LOST (or
    the result's own BAD_INPUT) with the reason. ``settings``: anything with ``min_inliers`` and
    ``min_inlier_ratio`` (``GateSettings``, the node's settings)."""
    if getattr(result, "status", None) == Status.BAD_INPUT:
        return Status.BAD_INPUT, getattr(result, "reason", "") or "the localizer refused the frame"
    if not getattr(result, "success", False):
        return Status.LOST, getattr(result, "reason", "") or "localisation failed"
    if result.inlier_count < settings.min_inliers:
        return Status.LOST, f"{result.inlier_count} inliers < min_inliers {settings.min_inliers}"
    if result.inlier_ratio < settings.min_inlier_ratio:
        return Status.LOST, f"inlier ratio {result.inlier_ratio:.3f} < min_inlier_ratio {settings.min_inlier_ratio:g}"
    if result.world_T_cam is None or not is_valid_pose(result.world_T_cam):
        return Status.LOST, "the estimated pose is not a finite rigid transform"
    covariance = getattr(result, "covariance_6x6", None)
    if covariance is None or not np.all(np.isfinite(covariance)):
        return Status.LOST, "the pose covariance is not finite"
    return Status.OK, ""


__all__ = ["GateSettings", "gate"]
