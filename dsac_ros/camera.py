"""The camera model of every path: pinhole intrinsics with the rescaling rule every resize must
go through, and lens distortion from a CameraInfo-like record, removed to the same K.

``camera_model_from_info(record)`` reads anything with CameraInfo's field names (``k``, ``d``,
``distortion_model``, ``width``, ``height``, ``binning_x``/``binning_y``, ``roi``): an rclpy
message, a ``rosbags`` message, or a plain object. The node, the bag reader, the folder reader,
mapping and both evaluations undistort through this one module, so a map and its queries see the
same pinhole images. ROS-free: OpenCV and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

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


# Distortion models OpenCV's pinhole model covers (plumb_bob: k1 k2 t1 t2 k3; rational_polynomial:
# k1 k2 t1 t2 k3 k4 k5 k6) and the fisheye one (equidistant: k1 k2 k3 k4), as CameraInfo names them.
PINHOLE_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")
FISHEYE_DISTORTION_MODELS = ("equidistant",)
SUPPORTED_DISTORTION_MODELS = PINHOLE_DISTORTION_MODELS + FISHEYE_DISTORTION_MODELS


class CameraInfoError(ValueError):
    """A camera description cannot be used (uncalibrated, unsupported distortion, wrong size, ...)."""


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics and the lens distortion to remove.

    distortion: (N,) float64 coefficients of ``distortion_model``; all zeros when none.
    """

    intrinsics: Intrinsics
    distortion_model: str = "plumb_bob"
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))

    @property
    def is_distorted(self) -> bool:
        return bool(np.any(self.distortion != 0.0))

    def key(self) -> tuple:
        return (self.intrinsics, self.distortion_model, tuple(self.distortion.tolist()))


def check_distortion(model: str, coefficients: np.ndarray) -> None:
    """Raise CameraInfoError unless ``model`` with these coefficients can be undistorted."""
    if not np.all(np.isfinite(coefficients)):
        raise CameraInfoError(f"distortion has non-finite coefficients: {coefficients.tolist()}")
    if not np.any(coefficients != 0.0):
        return  # no distortion, whatever the model is called
    if model in PINHOLE_DISTORTION_MODELS:
        if coefficients.size not in (4, 5, 8, 12, 14):
            raise CameraInfoError(f"{model} distortion with {coefficients.size} coefficients is not supported")
    elif model in FISHEYE_DISTORTION_MODELS:
        if coefficients.size != 4:
            raise CameraInfoError(f"equidistant distortion needs 4 coefficients, got {coefficients.size}")
    else:
        raise CameraInfoError(f"distortion model {model!r} with nonzero coefficients is not supported "
                              f"(supported: {', '.join(SUPPORTED_DISTORTION_MODELS)})")


def camera_model_from_info(record: Any, image_size: Optional[tuple[int, int]] = None) -> CameraModel:
    """A CameraInfo-like record -> CameraModel. Raises CameraInfoError with the reason.

    fx, fy, cx, cy come from ``k`` (row-major 3x3), never from an assumed image centre.
    image_size (width, height): the images it describes; a record for another size is refused,
    and a record without a size (0 x 0, old recordings) takes this one.
    """
    k = np.asarray(record.k, dtype=np.float64).reshape(-1)
    if k.shape != (9,) or k[0] == 0.0:
        raise CameraInfoError("CameraInfo is uncalibrated (k[0] == 0)")
    if not np.all(np.isfinite(k)):
        raise CameraInfoError(f"CameraInfo k has non-finite entries: {k.tolist()}")
    width, height = int(record.width), int(record.height)
    if image_size is not None:
        if (width, height) == (0, 0):
            width, height = int(image_size[0]), int(image_size[1])
        elif (width, height) != tuple(int(v) for v in image_size):
            raise CameraInfoError(f"CameraInfo is for {width}x{height} images, but the image is "
                                  f"{image_size[0]}x{image_size[1]}")
    if width == 0 or height == 0:
        raise CameraInfoError("CameraInfo has no image size (width or height is 0)")
    if int(getattr(record, "binning_x", 0)) > 1 or int(getattr(record, "binning_y", 0)) > 1:
        raise CameraInfoError(f"CameraInfo binning {record.binning_x}x{record.binning_y} is not supported")
    roi = getattr(record, "roi", None)
    if roi is not None and (roi.width or roi.height):
        if (roi.x_offset, roi.y_offset, roi.width, roi.height) != (0, 0, width, height):
            raise CameraInfoError("CameraInfo region of interest (a cropped image) is not supported")
    try:
        intrinsics = Intrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), width, height)
    except ValueError as error:
        raise CameraInfoError(f"CameraInfo intrinsics are invalid: {error}") from None
    distortion = np.asarray(record.d, dtype=np.float64).reshape(-1)
    model = str(record.distortion_model or "")
    try:
        check_distortion(model, distortion)
    except CameraInfoError as error:
        raise CameraInfoError(f"CameraInfo {error}") from None
    return CameraModel(intrinsics=intrinsics, distortion_model=model, distortion=distortion)


class Undistorter:
    """Removes lens distortion, keeping K: the output is the pinhole image of the same intrinsics.

    The remap tables are built once per camera model. Colour is interpolated bilinearly; depth
    with nearest neighbour so that no depth is invented across object boundaries. Pixels that
    map outside the source image are black (colour) or 0 = invalid (depth).
    """

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._maps: Optional[tuple[np.ndarray, np.ndarray]] = None

    def _maps_for(self, model: CameraModel) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        if self._key != model.key():
            K = model.intrinsics.K
            size = (model.intrinsics.width_px, model.intrinsics.height_px)
            if model.distortion_model in FISHEYE_DISTORTION_MODELS:
                map_x, map_y = cv2.fisheye.initUndistortRectifyMap(K, model.distortion, np.eye(3), K, size,
                                                                   cv2.CV_32FC1)
            else:
                map_x, map_y = cv2.initUndistortRectifyMap(K, model.distortion, None, K, size, cv2.CV_32FC1)
            self._key, self._maps = model.key(), (map_x, map_y)
        return self._maps

    def undistort_rgb(self, image_rgb: np.ndarray, model: CameraModel) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W, 3) uint8; returned unchanged when the model has no distortion."""
        import cv2

        if not model.is_distorted:
            return image_rgb
        map_x, map_y = self._maps_for(model)
        return cv2.remap(image_rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def undistort_depth(self, depth_m: np.ndarray, model: CameraModel) -> np.ndarray:
        """(H, W) float32 metres -> (H, W) float32 metres (0 = invalid)."""
        import cv2

        if not model.is_distorted:
            return depth_m
        map_x, map_y = self._maps_for(model)
        return cv2.remap(depth_m, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def distorted_pixel_map(model: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """For rendering through a lens: for every pixel of the distorted image, where it falls in the
    pinhole image of the same K. Returns map_x, map_y (H, W) float32 for ``cv2.remap`` of a
    pinhole render (the inverse of ``Undistorter``'s tables)."""
    import cv2

    intrinsics = model.intrinsics
    u, v = np.meshgrid(np.arange(intrinsics.width_px, dtype=np.float64),
                       np.arange(intrinsics.height_px, dtype=np.float64))
    points = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    K = intrinsics.K
    if not model.is_distorted:
        undistorted = points
    elif model.distortion_model in FISHEYE_DISTORTION_MODELS:
        undistorted = cv2.fisheye.undistortPoints(points, K, model.distortion, P=K)
    else:
        # Iterative inversion; more iterations than OpenCV's default 5 for strong barrel distortion.
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
        undistorted = cv2.undistortPoints(points, K, model.distortion, R=None, P=K, criteria=criteria)
    undistorted = undistorted.reshape(intrinsics.height_px, intrinsics.width_px, 2).astype(np.float32)
    return undistorted[..., 0], undistorted[..., 1]
