"""Conversions between ROS messages and the numpy / Intrinsics world of the dsac_ros core.

Images go through the ROS-free decoders of ``dsac_ros.data.images`` (no cv_bridge); CameraInfo
goes through ``dsac_ros.camera`` (``camera_model_from_info``, ``Undistorter``), the camera module
every path shares. Poses are 4x4 ``a_T_b``
matrices; covariances are (6, 6) over (x, y, z, rot X, rot Y, rot Z) as in geometry_msgs.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform

from dsac_ros.data.images import decode_compressed, decode_depth, decode_image
from dsac_ros.geometry import quaternion_xyzw_from_rotation
from dsac_ros.message_fields import pose_to_matrix, stamp_to_ns, transform_to_matrix
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

# --- stamps -----------------------------------------------------------------------------------

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


# --- poses ------------------------------------------------------------------------------------

def matrix_to_pose(a_T_b: np.ndarray) -> Pose:
    """(4, 4) rigid transform -> geometry_msgs/Pose (the pose of frame b in frame a)."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in a_T_b[:3, 3])
    q = quaternion_xyzw_from_rotation(a_T_b[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def matrix_to_transform(a_T_b: np.ndarray) -> Transform:
    """(4, 4) a_T_b -> geometry_msgs/Transform (for a TransformStamped with parent a, child b)."""
    transform = Transform()
    transform.translation.x, transform.translation.y, transform.translation.z = (float(v) for v in a_T_b[:3, 3])
    q = quaternion_xyzw_from_rotation(a_T_b[:3, :3])
    transform.rotation.x, transform.rotation.y, transform.rotation.z, transform.rotation.w = (float(v) for v in q)
    return transform


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


__all__ = ["STATE_OF_STATUS", "STATUS_OF_STATE", "compressed_msg_to_rgb", "covariance_for_attached_frame",
           "covariance_to_msg", "depth_msg_to_m", "image_msg_to_rgb", "matrix_to_pose", "matrix_to_transform",
           "ns_to_stamp", "pose_to_matrix", "stamp_to_ns", "transform_to_matrix"]
