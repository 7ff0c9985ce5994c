"""Sensor effects on rendered frames: what a real RGB-D camera adds to a perfect render.

Colour: pixel noise (Gaussian, in 8-bit levels), exposure gain and gamma, motion blur along the
camera's own image motion, JPEG compression. Depth: Kinect-like noise that grows with range
(sigma(z) = a + b * (z - z0)^2), dropout, a maximum range, and holes along depth edges. Every
effect is drawn from a generator keyed by (seed, frame index), so a frame's effects do not depend
on which other frames were rendered (stride, order) and a seed reproduces them exactly.

``SensorEffects.apply(frame, index, previous_world_T_cam)`` returns the changed Frame. Applied to
the image as recorded, so a distorted scene gets its effects in the distorted image, as a camera
would. ``SENSOR_MAPPING`` / ``SENSOR_TEST`` are the standard scenes' ``*_sensor`` settings: a
Kinect-like mapping recording, and test frames with exposure changes and blur on half of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from dsac_ros.frame import Frame


@dataclass(frozen=True)
class SensorEffects:
    """Effects and their strengths; defaults are none. Ranges ``(low, high)`` are drawn per frame."""

    pixel_noise_sigma: float = 0.0  # 8-bit levels
    jpeg_quality: int = 0  # 0 = no JPEG round trip
    exposure_gain: tuple[float, float] = (1.0, 1.0)
    gamma: tuple[float, float] = (1.0, 1.0)
    motion_blur_px: tuple[float, float] = (0.0, 0.0)  # blur length along the image motion
    motion_blur_fraction: float = 0.0  # share of frames blurred
    depth_noise_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (a m, b 1/m, z0 m): sigma = a + b (z - z0)^2
    depth_dropout: float = 0.0  # share of depth pixels lost at random
    depth_max_m: float = 0.0  # 0 = unlimited
    depth_edge_holes_px: int = 0  # depth lost within this many pixels of a depth edge
    depth_edge_step_m: float = 0.1  # what counts as a depth edge between neighbours
    seed: int = 0

    def generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), int(index), 0x5E7502])

    def apply(self, frame: Frame, index: int, previous_world_T_cam: Optional[np.ndarray] = None) -> Frame:
        """The frame as this sensor records it; ``previous_world_T_cam`` (the frame before, for the
        direction of motion blur) may be None (no blur then)."""
        rng = self.generator(index)
        image = self._colour(frame, rng, previous_world_T_cam)
        depth = None if frame.depth_m is None else self._depth(frame.depth_m, rng)
        return replace(frame, image_rgb=image, depth_m=depth)

    # ------------------------------------------------------------------ colour

    def _colour(self, frame: Frame, rng: np.random.Generator, previous_world_T_cam) -> np.ndarray:
        import cv2

        image = frame.image_rgb.astype(np.float32) / 255.0
        gain = rng.uniform(*self.exposure_gain)
        gamma = rng.uniform(*self.gamma)
        if gain != 1.0 or gamma != 1.0:
            image = np.clip(image * gain, 0.0, 1.0) ** gamma
        blur = rng.random() < self.motion_blur_fraction
        length_px = rng.uniform(*self.motion_blur_px)
        if blur and length_px >= 1.0 and previous_world_T_cam is not None and frame.depth_m is not None:
            direction = image_motion_direction(frame, previous_world_T_cam)
            if direction is not None:
                image = cv2.filter2D(image, -1, line_kernel(direction, length_px), borderType=cv2.BORDER_REFLECT)
        image = image * 255.0
        if self.pixel_noise_sigma > 0:
            image = image + rng.normal(0.0, self.pixel_noise_sigma, image.shape).astype(np.float32)
        image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
        if self.jpeg_quality > 0:
            ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            image = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])
        return image

    # ------------------------------------------------------------------ depth

    def _depth(self, depth_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        depth = np.array(depth_m, dtype=np.float32, copy=True)
        valid = np.isfinite(depth) & (depth > 0)
        a_m, b_per_m, z0_m = self.depth_noise_m
        if a_m > 0 or b_per_m > 0:
            sigma = a_m + b_per_m * (np.where(valid, depth, z0_m) - z0_m) ** 2
            depth = depth + (rng.standard_normal(depth.shape) * sigma).astype(np.float32)
        lost = np.zeros(depth.shape, bool)
        if self.depth_dropout > 0:
            lost |= rng.random(depth.shape) < self.depth_dropout
        if self.depth_max_m > 0:
            lost |= depth_m > self.depth_max_m
        if self.depth_edge_holes_px > 0:
            lost |= depth_edges(depth_m, self.depth_edge_step_m, self.depth_edge_holes_px)
        depth[lost | ~valid] = 0.0
        return depth


def line_kernel(direction_xy: np.ndarray, length_px: float) -> np.ndarray:
    """A normalised line of ``length_px`` along ``direction_xy`` (unit), for motion blur."""
    size = int(np.ceil(length_px)) | 1
    kernel = np.zeros((size, size), np.float32)
    centre = size // 2
    for t in np.linspace(-0.5, 0.5, 4 * size):
        x = int(round(centre + t * length_px * direction_xy[0]))
        y = int(round(centre + t * length_px * direction_xy[1]))
        if 0 <= x < size and 0 <= y < size:
            kernel[y, x] = 1.0
    return kernel / kernel.sum()


def image_motion_direction(frame: Frame, previous_world_T_cam: np.ndarray) -> Optional[np.ndarray]:
    """Unit (2,) direction in which the image content moved since the previous pose: the mean
    flow of a grid of scene points (from this frame's depth) projected into both poses."""
    from dsac_ros.geometry import invert_pose

    K = frame.intrinsics.K
    height, width = frame.depth_m.shape
    v, u = np.mgrid[height // 8:height:height // 4, width // 8:width:width // 4]
    z = frame.depth_m[v, u].astype(np.float64)
    keep = np.isfinite(z) & (z > 0)
    if not keep.any():
        return None
    u, v, z = u[keep], v[keep], z[keep]
    points_cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)
    previous_T_current = invert_pose(previous_world_T_cam) @ frame.world_T_cam
    points_previous = points_cam @ previous_T_current[:3, :3].T + previous_T_current[:3, 3]
    ahead = points_previous[:, 2] > 0.05
    if not ahead.any():
        return None
    u0 = K[0, 0] * points_previous[ahead, 0] / points_previous[ahead, 2] + K[0, 2]
    v0 = K[1, 1] * points_previous[ahead, 1] / points_previous[ahead, 2] + K[1, 2]
    flow = np.array([np.mean(u[ahead] - u0), np.mean(v[ahead] - v0)])
    norm = np.linalg.norm(flow)
    return None if norm < 1e-6 else flow / norm


def depth_edges(depth_m: np.ndarray, step_m: float, radius_px: int) -> np.ndarray:
    """(H, W) bool: pixels within ``radius_px`` of a jump of more than ``step_m`` between neighbours."""
    import cv2

    depth = np.where(np.isfinite(depth_m), depth_m, 0.0).astype(np.float32)
    # Both pixels of a jumping pair are on the edge, so holes fall on both sides alike.
    jump = np.zeros(depth.shape, bool)
    horizontal = np.abs(np.diff(depth, axis=1)) > step_m
    vertical = np.abs(np.diff(depth, axis=0)) > step_m
    jump[:, 1:] |= horizontal
    jump[:, :-1] |= horizontal
    jump[1:, :] |= vertical
    jump[:-1, :] |= vertical
    size = 2 * int(radius_px) + 1
    return cv2.dilate(jump.astype(np.uint8), np.ones((size, size), np.uint8)) > 0


# The standard scenes' sensor variants (issue 16's measurement, on a room outside the project):
# mapping frames as a Kinect records them; test frames with exposure changes and blur on half.
KINECT_DEPTH = dict(depth_noise_m=(0.0012, 0.0019, 0.4), depth_dropout=0.03, depth_max_m=5.0, depth_edge_holes_px=1)
SENSOR_MAPPING = SensorEffects(pixel_noise_sigma=3.0, jpeg_quality=90, seed=11, **KINECT_DEPTH)
SENSOR_TEST = SensorEffects(pixel_noise_sigma=3.0, jpeg_quality=90, exposure_gain=(0.6, 1.4), gamma=(0.8, 1.25),
                            motion_blur_px=(2.0, 9.0), motion_blur_fraction=0.5, seed=12, **KINECT_DEPTH)


__all__ = ["KINECT_DEPTH", "SENSOR_MAPPING", "SENSOR_TEST", "SensorEffects", "depth_edges", "image_motion_direction",
           "line_kernel"]
