"""Keyframes by covisibility: a mapping frame joins the memory only if it shows enough that the
memory has not seen, so a map grows with what the scene looks like, not with how long the camera
looked at it (SLAM systems pick keyframes the same way).

A sample of each frame's pixels (a grid every ``GRID_STRIDE_PX``) is lifted to 3D: with its depth
in rgbd mode, at ``nominal_depth_m`` in rgb mode (no depth while recording is read). A point counts
as seen when some keyframe already views it

* inside its image, in front of it and (rgbd) not hidden: the keyframe's own depth there agrees;
* from a direction within ``max_view_angle_deg`` and a distance within ``max_scale_ratio`` of
  this frame's: the encoder's features change with viewpoint and scale, so a view of the same
  surface from far enough away is new information for the lookup.

A frame is a keyframe when at least ``min_novel_fraction`` of its points are unseen. Revisiting
the same views adds nothing; the first pass through a room and any new viewpoint are kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from dsac_ros.camera import Intrinsics

GRID_STRIDE_PX = 32  # 20 x 15 points at 640 x 480: coverage to a few percent, 0.1 ms per keyframe
MIN_DEPTH_M = 0.1
RGBD_VIEW_ANGLE_DEG = 5.0
RGB_VIEW_ANGLE_DEG = 3.0
RECENT_KEYFRAMES = 16


@dataclass
class KeyframeOptions:
    """When a mapping frame joins a memory map (see the module docstring). ``enabled`` False keeps
    every frame (the format-1 behaviour)."""

    enabled: bool = True
    min_novel_fraction: float = 0.05
    # None: the mode's (``for_mode``): 5 deg with depth; 3 deg in rgb mode, where only about 60 % of
    # a frame's cells get a triangulated coordinate and triangulation needs close partners
    # (small_room rgb: 63.3 % within 5 cm / 5 deg at 5 deg, 70.0 % at 3 deg, 68.7 % with every frame).
    max_view_angle_deg: Optional[float] = None
    max_scale_ratio: float = 1.25
    nominal_depth_m: float = 2.0  # rgb mode: where the sampled pixels are assumed to lie
    depth_tolerance: float = 0.05  # rgbd occlusion test: relative depth agreement (plus 2 cm)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_novel_fraction <= 1.0:
            raise ValueError(f"min_novel_fraction must be in [0, 1], got {self.min_novel_fraction}")
        if self.max_view_angle_deg is not None and not self.max_view_angle_deg > 0:
            raise ValueError(f"max_view_angle_deg must be positive, got {self.max_view_angle_deg}")
        if not self.max_scale_ratio >= 1.0 or not self.nominal_depth_m > 0:
            raise ValueError("nominal_depth_m must be positive and max_scale_ratio at least 1")

    def for_mode(self, mode: str) -> "KeyframeOptions":
        """These options with the mode's view angle filled in where it is None."""
        if self.max_view_angle_deg is not None:
            return self
        return dataclasses.replace(self, max_view_angle_deg=RGB_VIEW_ANGLE_DEG if mode == "rgb" else RGBD_VIEW_ANGLE_DEG)


class _KeyframeGroup:
    """Keyframes of one image size (and with or without depth), stacked for vectorised tests."""

    def __init__(self, K: np.ndarray, size_px: tuple[int, int], has_depth: bool) -> None:
        self.K, self.size_px, self.has_depth = K, size_px, has_depth
        self.cam_T_world = np.zeros((0, 4, 4))
        self.centres_m = np.zeros((0, 3))
        self.depth_grids_m: Optional[np.ndarray] = None  # (k, rows, cols) camera z, NaN unknown

    def add(self, cam_T_world: np.ndarray, centre_m: np.ndarray, depth_grid_m: Optional[np.ndarray]) -> None:
        self.cam_T_world = np.concatenate([self.cam_T_world, cam_T_world[None]])
        self.centres_m = np.concatenate([self.centres_m, centre_m[None]])
        if depth_grid_m is not None:
            grids = depth_grid_m[None]
            self.depth_grids_m = grids if self.depth_grids_m is None else np.concatenate([self.depth_grids_m, grids])


@dataclass
class KeyframeSelector:
    """Streaming selection: ``consider`` one frame after another; it answers whether to keep it."""

    options: KeyframeOptions = field(default_factory=lambda: KeyframeOptions().for_mode("rgbd"))
    groups: dict = field(default_factory=dict)
    considered: int = 0
    kept: int = 0

    def consider(self, world_T_cam: np.ndarray, intrinsics: Intrinsics, depth_m: Optional[np.ndarray]) -> bool:
        """True if the frame (pose, intrinsics, optional (H, W) depth in metres) becomes a keyframe."""
        self.considered += 1
        grid_depth, points, centre = self._sample(world_T_cam, intrinsics, depth_m)
        known = np.isfinite(points).all(axis=1)
        if self.kept and known.any():
            # The latest keyframes cover most frames of a smooth recording: test them first and
            # the rest only if the frame still looks new.
            seen = np.zeros(int(known.sum()), dtype=bool)
            for recent in (True, False):
                for group in self.groups.values():
                    chosen = slice(-RECENT_KEYFRAMES, None) if recent else slice(None, -RECENT_KEYFRAMES)
                    seen |= self._seen(group, chosen, points[known], centre)
                if 1.0 - seen.mean() < self.options.min_novel_fraction:
                    return False
        key = (intrinsics.width_px, intrinsics.height_px, tuple(np.round(intrinsics.K.ravel(), 6)), depth_m is not None)
        if key not in self.groups:
            self.groups[key] = _KeyframeGroup(intrinsics.K.copy(), (intrinsics.width_px, intrinsics.height_px),
                                              depth_m is not None)
        self.groups[key].add(np.linalg.inv(world_T_cam), centre, grid_depth)
        self.kept += 1
        return True

    def _sample(self, world_T_cam: np.ndarray, intrinsics: Intrinsics, depth_m: Optional[np.ndarray]):
        """-> (rows, cols) camera-z grid or None, (n, 3) world points (NaN where unknown), (3,) centre."""
        width, height = intrinsics.width_px, intrinsics.height_px
        ys, xs = np.mgrid[GRID_STRIDE_PX // 2:height:GRID_STRIDE_PX, GRID_STRIDE_PX // 2:width:GRID_STRIDE_PX]
        if depth_m is not None:
            z = np.asarray(depth_m, dtype=np.float32)[ys, xs].astype(np.float64)
            z[~(np.isfinite(z) & (z > MIN_DEPTH_M))] = np.nan
        else:
            z = np.full(xs.shape, self.options.nominal_depth_m)
        rays = np.linalg.solve(intrinsics.K, np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]))  # (3, n), z = 1
        points_cam = rays * z.ravel()
        points = (world_T_cam[:3, :3] @ points_cam + world_T_cam[:3, 3:4]).T
        return (z if depth_m is not None else None), points, world_T_cam[:3, 3].copy()

    def _seen(self, group: _KeyframeGroup, chosen: slice, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """(n, 3) world points seen from ``centre`` -> (n,) bool: some ``chosen`` keyframe of the group
        views them alike."""
        options = self.options
        cam_T_world, centres = group.cam_T_world[chosen], group.centres_m[chosen]
        grids = None if group.depth_grids_m is None else group.depth_grids_m[chosen]
        if len(cam_T_world) == 0:
            return np.zeros(len(points), dtype=bool)
        to_points = points - centre
        distance = np.linalg.norm(to_points, axis=1)  # (n,)
        directions = to_points / distance[:, None]
        cam = np.einsum("kij,nj->kni", cam_T_world[:, :3, :3], points) + cam_T_world[:, None, :3, 3]
        z = cam[..., 2]  # (k, n)
        in_front = z > MIN_DEPTH_M
        safe_z = np.where(in_front, z, 1.0)
        u = cam[..., 0] / safe_z * group.K[0, 0] + group.K[0, 2]
        v = cam[..., 1] / safe_z * group.K[1, 1] + group.K[1, 2]
        width, height = group.size_px
        inside = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        from_keyframes = points[None] - centres[:, None]  # (k, n, 3)
        keyframe_distance = np.linalg.norm(from_keyframes, axis=2)
        cos_angle = (from_keyframes * directions[None]).sum(2) / np.maximum(keyframe_distance, 1e-9)
        ratio = keyframe_distance / distance[None]
        alike = inside & (cos_angle >= np.cos(np.radians(options.max_view_angle_deg or RGBD_VIEW_ANGLE_DEG))) & \
            (ratio <= options.max_scale_ratio) & (ratio >= 1.0 / options.max_scale_ratio)
        if grids is not None:
            k, rows, cols = grids.shape
            r = np.clip((np.where(inside, v, 0) // GRID_STRIDE_PX).astype(int), 0, rows - 1)
            c = np.clip((np.where(inside, u, 0) // GRID_STRIDE_PX).astype(int), 0, cols - 1)
            surface = grids[np.arange(k)[:, None], r, c]
            # Unknown keyframe depth counts as not seen: the memory has no coordinate there.
            with np.errstate(invalid="ignore"):
                alike &= np.abs(surface - z) <= options.depth_tolerance * z + 0.02
        return alike.any(axis=0)
