"""Conversions between ROS messages and the numpy / Intrinsics world of the dsac_ros core.

Images go through the ROS-free decoders of ``dsac_ros.data.images`` (no cv_bridge). CameraInfo
becomes a ``CameraModel``: intrinsics from ``k`` (fx, fy, cx, cy) plus the distortion, which is
removed by ``Undistorter`` (OpenCV remap to the same K), never ignored. Poses are 4x4 ``a_T_b``
matrices; covariances are (6, 6) over (x, y, z, rot X, rot Y, rot Z) as in geometry_msgs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform

from dsac_ros.camera import Intrinsics
from dsac_ros.data.images import decode_compressed, decode_depth, decode_image
from dsac_ros.geometry import make_pose, quaternion_xyzw_from_rotation, rotation_from_quaternion_xyzw
from dsac_ros.msg import LocalizationStatus
from dsac_ros.status import Status

# The one place where the core's Status meets the message's integers.
STATE_OF_STATUS = {
    Status.OK: LocalizationStatus.STATE_OK,
    Status.LOST: LocalizationStatus.STATE_LOST,
    Status.NO_IMAGE: LocalizationStatus.STATE_NO_IMAGE,
    Status.BAD_INPUT: LocalizationStatus.STATE_BAD_INPUT,
    Status.NO_MODEL: LocalizationStatus.STATE_NO_MODEL,
}
STATUS_OF_STATE = {state: status for status, state in STATE_OF_STATUS.items()}

# Distortion models OpenCV's pinhole model covers (plumb_bob: k1 k2 t1 t2 k3; rational_polynomial:
# k1 k2 t1 t2 k3 k4 k5 k6) and the fisheye one (equidistant: k1 k2 k3 k4).
PINHOLE_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")
FISHEYE_DISTORTION_MODELS = ("equidistant",)


class CameraInfoError(ValueError):
    """A CameraInfo message cannot be used (uncalibrated, unsupported distortion, ...)."""


# --- stamps -----------------------------------------------------------------------------------

def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time."""
    stamp_ns = max(int(stamp_ns), 0)
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


# --- images -----------------------------------------------------------------------------------

def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB. Raises ImageDecodeError with the reason."""
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def depth_msg_to_m(msg) -> np.ndarray:
    """sensor_msgs/Image (16UC1 mm or 32FC1 m) -> (H, W) float32 metres, 0 = invalid."""
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)


def compressed_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB. Raises ImageDecodeError."""
    return decode_compressed(msg.format, msg.data)


# --- camera -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CameraModel:
    """What the node needs from a CameraInfo: intrinsics and the distortion to remove.

    distortion: (N,) float64 coefficients of ``distortion_model``; all zeros when none.
    """

    intrinsics: Intrinsics
    distortion_model: str
    distortion: np.ndarray

    @property
    def is_distorted(self) -> bool:
        return bool(np.any(self.distortion != 0.0))

    def key(self) -> tuple:
        return (self.intrinsics, self.distortion_model, tuple(self.distortion.tolist()))


def camera_info_to_model(msg) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel. Raises CameraInfoError with the reason.

    fx, fy, cx, cy come from ``k`` (row-major 3x3), never from an assumed image centre.
    """
    k = np.asarray(msg.k, dtype=np.float64)
    if k.shape != (9,) or k[0] == 0.0:
        raise CameraInfoError("CameraInfo is uncalibrated (k[0] == 0)")
    if not np.all(np.isfinite(k)):
        raise CameraInfoError(f"CameraInfo k has non-finite entries: {k.tolist()}")
    if msg.width == 0 or msg.height == 0:
        raise CameraInfoError("CameraInfo has no image size (width or height is 0)")
    if msg.binning_x > 1 or msg.binning_y > 1:
        raise CameraInfoError(f"CameraInfo binning {msg.binning_x}x{msg.binning_y} is not supported")
    roi = msg.roi
    if roi.width or roi.height:
        if (roi.x_offset, roi.y_offset, roi.width, roi.height) != (0, 0, msg.width, msg.height):
            raise CameraInfoError("CameraInfo region of interest (a cropped image) is not supported")
    try:
        intrinsics = Intrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(msg.width), int(msg.height))
    except ValueError as error:
        raise CameraInfoError(f"CameraInfo intrinsics are invalid: {error}") from None
    distortion = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(distortion)):
        raise CameraInfoError(f"CameraInfo distortion has non-finite coefficients: {distortion.tolist()}")
    model = msg.distortion_model or ""
    if np.any(distortion != 0.0):
        if model in PINHOLE_DISTORTION_MODELS:
            if distortion.size not in (4, 5, 8, 12, 14):
                raise CameraInfoError(f"{model} distortion with {distortion.size} coefficients is not supported")
        elif model in FISHEYE_DISTORTION_MODELS:
            if distortion.size != 4:
                raise CameraInfoError(f"equidistant distortion needs 4 coefficients, got {distortion.size}")
        else:
            raise CameraInfoError(f"distortion model {model!r} with nonzero coefficients is not supported "
                                  f"(supported: {', '.join(PINHOLE_DISTORTION_MODELS + FISHEYE_DISTORTION_MODELS)})")
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
        if not model.is_distorted:
            return image_rgb
        map_x, map_y = self._maps_for(model)
        return cv2.remap(image_rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def undistort_depth(self, depth_m: np.ndarray, model: CameraModel) -> np.ndarray:
        """(H, W) float32 metres -> (H, W) float32 metres (0 = invalid)."""
        if not model.is_distorted:
            return depth_m
        map_x, map_y = self._maps_for(model)
        return cv2.remap(depth_m, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# --- poses ------------------------------------------------------------------------------------

def matrix_to_pose(a_T_b: np.ndarray) -> Pose:
    """(4, 4) rigid transform -> geometry_msgs/Pose (the pose of frame b in frame a)."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in a_T_b[:3, 3])
    q = quaternion_xyzw_from_rotation(a_T_b[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4). Raises ValueError for a zero or non-finite quaternion."""
    q = pose.orientation
    rotation = rotation_from_quaternion_xyzw([q.x, q.y, q.z, q.w])
    translation = np.array([pose.position.x, pose.position.y, pose.position.z])
    if not np.all(np.isfinite(translation)):
        raise ValueError(f"pose position is not finite: {translation.tolist()}")
    return make_pose(rotation, translation)


def matrix_to_transform(a_T_b: np.ndarray) -> Transform:
    """(4, 4) a_T_b -> geometry_msgs/Transform (for a TransformStamped with parent a, child b)."""
    transform = Transform()
    transform.translation.x, transform.translation.y, transform.translation.z = (float(v) for v in a_T_b[:3, 3])
    q = quaternion_xyzw_from_rotation(a_T_b[:3, :3])
    transform.rotation.x, transform.rotation.y, transform.rotation.z, transform.rotation.w = (float(v) for v in q)
    return transform


def transform_to_matrix(transform: Transform) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4). Raises ValueError for a zero or non-finite quaternion."""
    q = transform.rotation
    rotation = rotation_from_quaternion_xyzw([q.x, q.y, q.z, q.w])
    t = transform.translation
    return make_pose(rotation, [t.x, t.y, t.z])


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def covariance_for_attached_frame(covariance_6x6: np.ndarray, map_T_cam: np.ndarray,
                                  cam_T_other: np.ndarray) -> np.ndarray:
    """Propagate a pose covariance from the camera to a frame rigidly attached to it.

    Both covariances are over (position in map, small rotation about the map's fixed axes), the
    geometry_msgs convention. With p_other = p_cam + R_cam t and a rotation error dtheta applied
    on the left, d p_other = d p_cam - [R_cam t]x dtheta and the rotation error is shared:
    J = [[I, -[R_cam t]x], [0, I]], covariance J C J^T. Returns (6, 6).
    """
    lever_map = map_T_cam[:3, :3] @ cam_T_other[:3, 3]
    jacobian = np.eye(6)
    jacobian[:3, 3:] = -_skew(lever_map)
    return jacobian @ np.asarray(covariance_6x6, dtype=np.float64) @ jacobian.T


def covariance_to_msg(covariance_6x6: np.ndarray) -> list[float]:
    """(6, 6) covariance -> 36 row-major floats. Raises ValueError unless finite and symmetric
    with a non-negative diagonal (a NaN or negative variance is never published)."""
    covariance = np.asarray(covariance_6x6, dtype=np.float64)
    if covariance.shape != (6, 6):
        raise ValueError(f"covariance must be 6x6, got {covariance.shape}")
    if not np.all(np.isfinite(covariance)):
        raise ValueError("covariance has non-finite entries")
    if np.any(np.diag(covariance) < 0.0):
        raise ValueError(f"covariance has negative variances: {np.diag(covariance).tolist()}")
    scale = max(float(np.abs(covariance).max()), 1e-300)
    if not np.allclose(covariance, covariance.T, atol=1e-9 * scale):
        raise ValueError("covariance is not symmetric")
    covariance = 0.5 * (covariance + covariance.T)
    return [float(v) for v in covariance.reshape(36)]
