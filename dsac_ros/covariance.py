"""A floor under the published pose covariance.

A filter that fuses our pose (robot_localization's EKF, a pose-graph) trusts it in proportion to
the inverse covariance. The inlier-residual estimate of a frame with thousands of inliers can
claim sub-millimetre precision that the 8-pixel cell grid cannot deliver, and a near-singular
covariance makes the filter's update ill-conditioned; users then inflate it by hand. The floor
makes the published covariance at least ``diag(position_m^2 x 3, rotation_rad^2 x 3)`` in the
Loewner order (every direction, not only the axes), symmetric and positive definite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CovarianceFloor:
    """Standard deviations below which no direction of the 6-DoF covariance may fall.

    position_m: metres, per position direction; rotation_deg: degrees, per rotation direction.
    0 for both disables the floor (the covariance is still symmetrised and checked).
    """

    # Below what the method resolves: on small_room the calibrated covariance's smallest standard
    # deviations were 7 mm and 0.2 deg (1st percentile of published frames), an uncalibrated
    # map's about six times smaller.
    position_m: float = 0.005
    rotation_deg: float = 0.1

    def __post_init__(self) -> None:
        for name in ("position_m", "rotation_deg"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"covariance floor {name} must be a finite number >= 0, got {value!r}")

    @property
    def rotation_rad(self) -> float:
        return math.radians(self.rotation_deg)


NO_FLOOR = CovarianceFloor(0.0, 0.0)


def apply_floor(covariance_6x6: np.ndarray, floor: CovarianceFloor) -> np.ndarray:
    """(6, 6) covariance (x, y, z, rot x, rot y, rot z; m^2, rad^2) -> the same with no direction
    below the floor: symmetrised, then, in units of the floor's standard deviations, every
    eigenvalue raised to at least 1. Entries above the floor keep their value (to rounding).
    Raises ValueError on a non-finite input (callers treat the frame as LOST)."""
    covariance = np.asarray(covariance_6x6, dtype=np.float64)
    if covariance.shape != (6, 6):
        raise ValueError(f"covariance must be 6x6, got {covariance.shape}")
    if not np.all(np.isfinite(covariance)):
        raise ValueError("covariance has non-finite entries")
    covariance = 0.5 * (covariance + covariance.T)
    if floor.position_m <= 0 and floor.rotation_deg <= 0:
        return covariance
    # A zero floor on one block would divide by zero: use a negligible one there instead.
    sigma = np.array([max(floor.position_m, 1e-9)] * 3 + [max(floor.rotation_rad, 1e-9)] * 3)
    whitened = covariance / np.outer(sigma, sigma)
    eigenvalues, eigenvectors = np.linalg.eigh(whitened)
    if eigenvalues.min() >= 1.0:
        return covariance
    raised = (eigenvectors * np.maximum(eigenvalues, 1.0)) @ eigenvectors.T
    raised = 0.5 * (raised + raised.T)
    return raised * np.outer(sigma, sigma)


__all__ = ["CovarianceFloor", "NO_FLOOR", "apply_floor"]
