"""Pixel buffers for fast mapping (ACE): encoder features of many frames, trained on in random batches.

Training a per-scene head on random pixels drawn from all mapping frames, instead of whole
images, is what makes ACE-style mapping fast: one frozen encoder pass per (augmented) frame,
then thousands of cheap head steps over decorrelated samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch

from dsac_ros.camera import Intrinsics
from dsac_ros.geometry import transform_points
from dsac_ros.network import OUTPUT_STRIDE, backproject_depth_at, cell_centers_px


@dataclass
class PixelBuffer:
    """Samples for head training; N rows, one per (frame, output cell).

    features: (N, C) float16 encoder features.
    coords_world_m: (N, 3) float32 ground-truth scene coordinates (NaN where depth is invalid).
    pixels_xy: (N, 2) float32 cell centres in the pixels of the frame's own ``intrinsics``.
    frame_index: (N,) int32 index into ``cam_T_world`` / ``intrinsics_K``.
    cam_T_world: (F, 4, 4) float32 per-frame world-to-camera transforms.
    intrinsics_K: (F, 3, 3) float32 per-frame calibration of the image the pixels refer to.
    """

    features: torch.Tensor
    coords_world_m: torch.Tensor
    pixels_xy: torch.Tensor
    frame_index: torch.Tensor
    cam_T_world: torch.Tensor
    intrinsics_K: torch.Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def frames(self) -> int:
        return int(self.cam_T_world.shape[0])

    def has_depth(self) -> torch.Tensor:
        """(N,) bool: rows with a valid ground-truth coordinate."""
        return torch.isfinite(self.coords_world_m).all(dim=1)

    def to(self, device: torch.device) -> "PixelBuffer":
        return PixelBuffer(*(t.to(device) for t in (self.features, self.coords_world_m, self.pixels_xy,
                                                    self.frame_index, self.cam_T_world, self.intrinsics_K)))

    @staticmethod
    def concatenate(parts: Iterable["PixelBuffer"]) -> "PixelBuffer":
        parts = list(parts)
        offsets = np.cumsum([0] + [p.frames for p in parts[:-1]])
        return PixelBuffer(
            torch.cat([p.features for p in parts]),
            torch.cat([p.coords_world_m for p in parts]),
            torch.cat([p.pixels_xy for p in parts]),
            torch.cat([p.frame_index + int(o) for p, o in zip(parts, offsets)]),
            torch.cat([p.cam_T_world for p in parts]),
            torch.cat([p.intrinsics_K for p in parts]),
        )


def cell_targets(depth_m: Optional[np.ndarray], world_T_cam: np.ndarray, intrinsics: Intrinsics,
                 pixels_xy: np.ndarray) -> np.ndarray:
    """(N, 3) float32 world coordinates seen at ``pixels_xy`` (NaN where depth is missing/invalid).

    depth_m: (H, W) metres registered to the image ``intrinsics`` describes, or None.
    """
    if depth_m is None:
        return np.full((len(pixels_xy), 3), np.nan, dtype=np.float32)
    points_cam, valid = backproject_depth_at(depth_m, intrinsics, pixels_xy)
    coords = transform_points(world_T_cam, points_cam).astype(np.float32)
    coords[~valid] = np.nan
    return coords


def buffer_from_features(features: torch.Tensor, image_size: tuple[int, int], input_size: tuple[int, int],
                         intrinsics: Intrinsics, world_T_cam: np.ndarray,
                         depth_m: Optional[np.ndarray]) -> PixelBuffer:
    """One frame's buffer rows from its encoder output.

    features: (1, C, h, w) encoder features of the network input (``input_size`` = (w*8, h*8));
    image_size / intrinsics / depth_m describe the original image the pose belongs to.
    """
    _, channels, cells_h, cells_w = features.shape
    pixels_xy = cell_centers_px(cells_w, cells_h, input_size, image_size)
    coords = cell_targets(depth_m, world_T_cam, intrinsics, pixels_xy)
    flat = features[0].reshape(channels, -1).T.contiguous()
    cam_T_world = np.linalg.inv(np.asarray(world_T_cam, dtype=np.float64))
    return PixelBuffer(
        features=flat.to(torch.float16).cpu(),
        coords_world_m=torch.from_numpy(coords),
        pixels_xy=torch.from_numpy(pixels_xy.astype(np.float32)),
        frame_index=torch.zeros(len(pixels_xy), dtype=torch.int32),
        cam_T_world=torch.from_numpy(cam_T_world.astype(np.float32))[None],
        intrinsics_K=torch.from_numpy(intrinsics.K.astype(np.float32))[None],
    )


def check_cell_grid(features: torch.Tensor, input_size: tuple[int, int]) -> None:
    """Guard against silently misaligned targets: the grid must be the input size / stride."""
    _, _, cells_h, cells_w = features.shape
    if (cells_w * OUTPUT_STRIDE, cells_h * OUTPUT_STRIDE) != tuple(input_size):
        raise ValueError(f"feature grid {cells_w}x{cells_h} does not match input {input_size} / {OUTPUT_STRIDE}")
