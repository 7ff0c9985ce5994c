"""The one record every data source yields and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from dsac_ros.camera import CameraModel, Intrinsics


@dataclass
class Frame:
    """One camera frame with optional depth and ground truth.

    image_rgb: (H, W, 3) uint8, RGB order.
    depth_m: (H, W) float32 metres, 0 or non-finite = invalid; None when not recorded.
    world_T_cam: (4, 4) float64 camera-to-world pose; None when not known.
    stamp_ns: acquisition time in nanoseconds (ROS time for bags, index-derived for folders).
    distortion_model / distortion: the lens distortion of image_rgb and depth_m (CameraInfo's
    names and coefficient order) when they are not pinhole images, as a renderer through a lens
    writes them; readers undistort and yield pinhole frames (no coefficients).
    """

    image_rgb: np.ndarray
    intrinsics: Intrinsics
    stamp_ns: int = 0
    depth_m: Optional[np.ndarray] = None
    world_T_cam: Optional[np.ndarray] = None
    name: str = ""
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = ()

    @property
    def is_distorted(self) -> bool:
        return any(value != 0.0 for value in self.distortion)

    @property
    def camera_model(self) -> CameraModel:
        """Intrinsics and lens distortion of this frame's images."""
        return CameraModel(self.intrinsics, self.distortion_model, np.asarray(self.distortion, dtype=np.float64))


def stamp_seed(stamp_ns: int) -> int:
    """RANSAC seed of a frame from its stamp alone, so a replay (live or offline) reproduces every pose."""
    return int(stamp_ns) % 2_147_483_647
