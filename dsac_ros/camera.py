"""Pinhole camera intrinsics, with the rescaling rule every resize must go through."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width_px`` x ``height_px``.

    Pixel centres sit at integer coordinates (OpenCV convention): the top-left pixel's
    centre is (0, 0). The principal point is never assumed to be the image centre.
    """

    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    width_px: int
    height_px: int

    def __post_init__(self) -> None:
        values = (self.fx_px, self.fy_px, self.cx_px, self.cy_px)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"intrinsics must be finite, got {values}")
        if self.fx_px <= 0 or self.fy_px <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx_px}, fy={self.fy_px}")
        if self.width_px <= 0 or self.height_px <= 0:
            raise ValueError(f"image size must be positive, got {self.width_px}x{self.height_px}")

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 calibration matrix."""
        return np.array(
            [[self.fx_px, 0.0, self.cx_px], [0.0, self.fy_px, self.cy_px], [0.0, 0.0, 1.0]],
            dtype=np.float64,
        )

    @classmethod
    def from_K(cls, K: np.ndarray, width_px: int, height_px: int) -> "Intrinsics":
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   int(width_px), int(height_px))

    def resized(self, width_px: int, height_px: int) -> "Intrinsics":
        """Intrinsics of the same camera after resizing the whole image to a new size.

        With pixel centres at integer coordinates, a resize by factor s maps pixel u to
        (u + 0.5) * s - 0.5, so the principal point shifts by half a pixel as well.
        """
        sx = width_px / self.width_px
        sy = height_px / self.height_px
        return Intrinsics(
            self.fx_px * sx,
            self.fy_px * sy,
            (self.cx_px + 0.5) * sx - 0.5,
            (self.cy_px + 0.5) * sy - 0.5,
            int(width_px),
            int(height_px),
        )

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.fx_px, self.fy_px, self.cx_px, self.cy_px)
