"""ROS message fields -> numpy, ROS-free: header stamps, Pose and Transform as 4x4 matrices.

They read attributes only, so rclpy messages (the node) and ``rosbags`` messages (the bag reader)
go through the same code. Building messages is ROS's business: ``dsac_ros.ros.conversions``.
"""

from __future__ import annotations

import numpy as np

from dsac_ros.geometry import make_pose, rotation_from_quaternion_xyzw


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def pose_to_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4). Raises ValueError for a zero or non-finite quaternion or position."""
    q = pose.orientation
    rotation = rotation_from_quaternion_xyzw([q.x, q.y, q.z, q.w])
    translation = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    if not np.all(np.isfinite(translation)):
        raise ValueError(f"pose position is not finite: {translation.tolist()}")
    return make_pose(rotation, translation)


def transform_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4). Raises ValueError for a zero or non-finite quaternion or translation."""
    q = transform.rotation
    rotation = rotation_from_quaternion_xyzw([q.x, q.y, q.z, q.w])
    t = transform.translation
    translation = np.array([t.x, t.y, t.z], dtype=np.float64)
    if not np.all(np.isfinite(translation)):
        raise ValueError(f"transform translation is not finite: {translation.tolist()}")
    return make_pose(rotation, translation)


__all__ = ["pose_to_matrix", "stamp_to_ns", "transform_to_matrix"]
