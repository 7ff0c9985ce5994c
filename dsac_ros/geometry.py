"""Rigid transforms, rotations, projection and pose errors (numpy, float64).

One convention everywhere: ``a_T_b`` maps points from frame b into frame a; the camera
pose is ``world_T_cam``. Quaternions are (x, y, z, w), as in ROS messages and TUM files.
Batched torch versions used by the DSAC core live next to the solvers.
"""

from __future__ import annotations

import numpy as np


def make_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation and (3,) translation -> (4, 4) rigid transform."""
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return pose


def invert_pose(a_T_b: np.ndarray) -> np.ndarray:
    """(..., 4, 4) rigid transform -> its inverse b_T_a, without a general matrix inverse."""
    a_T_b = np.asarray(a_T_b, dtype=np.float64)
    rotation_t = np.swapaxes(a_T_b[..., :3, :3], -1, -2)
    b_T_a = np.zeros_like(a_T_b)
    b_T_a[..., :3, :3] = rotation_t
    b_T_a[..., :3, 3] = -np.einsum("...ij,...j->...i", rotation_t, a_T_b[..., :3, 3])
    b_T_a[..., 3, 3] = 1.0
    return b_T_a


def transform_points(a_T_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Apply (4, 4) a_T_b to (N, 3) points in frame b -> (N, 3) points in frame a."""
    points_b = np.asarray(points_b, dtype=np.float64)
    return points_b @ a_T_b[:3, :3].T + a_T_b[:3, 3]


def project_points(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) pixel coordinates (x right, y down).

    Points at or behind the camera give non-finite pixels; callers mask by depth first.
    """
    points_cam = np.asarray(points_cam, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = points_cam[:, 0] / points_cam[:, 2]
        y = points_cam[:, 1] / points_cam[:, 2]
    return np.stack([K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1)


def rotation_angle_deg(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation -> (...) rotation angle in degrees, numerically safe near 0 and 180."""
    rotation = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(rotation, axis1=-2, axis2=-1)
    cos = np.clip((trace - 1.0) / 2.0, -1.0, 1.0)
    # arctan2 of the skew part is accurate where arccos is not (small angles).
    skew = np.stack([
        rotation[..., 2, 1] - rotation[..., 1, 2],
        rotation[..., 0, 2] - rotation[..., 2, 0],
        rotation[..., 1, 0] - rotation[..., 0, 1],
    ], axis=-1)
    sin = np.linalg.norm(skew, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def pose_errors(world_T_cam_est: np.ndarray, world_T_cam_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation error (m) between camera centres and rotation error (deg).

    Inputs (..., 4, 4) camera-to-world poses; outputs two (...) arrays.
    """
    est = np.asarray(world_T_cam_est, dtype=np.float64)
    gt = np.asarray(world_T_cam_gt, dtype=np.float64)
    translation_m = np.linalg.norm(est[..., :3, 3] - gt[..., :3, 3], axis=-1)
    relative = np.swapaxes(est[..., :3, :3], -1, -2) @ gt[..., :3, :3]
    return translation_m, rotation_angle_deg(relative)


def pose_error_vector(world_T_cam_est: np.ndarray, world_T_cam_gt: np.ndarray) -> np.ndarray:
    """(6,) error of an estimate in the convention of its covariance (``refinement.pose_covariance``):
    camera centre difference (m) and the rotation vector of R_est R_gt^T (rad, world axes)."""
    from scipy.spatial.transform import Rotation

    est, gt = np.asarray(world_T_cam_est, dtype=np.float64), np.asarray(world_T_cam_gt, dtype=np.float64)
    rotation = Rotation.from_matrix(est[:3, :3] @ gt[:3, :3].T).as_rotvec()
    return np.concatenate([est[:3, 3] - gt[:3, 3], rotation])


def quaternion_xyzw_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def rotation_from_quaternion_xyzw(quaternion_xyzw) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised here -> (3, 3) rotation. Raises on a zero quaternion."""
    x, y, z, w = np.asarray(quaternion_xyzw, dtype=np.float64)
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"invalid quaternion {quaternion_xyzw}")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_from_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """(3,) rotation vector (radians) -> (3, 3) rotation (Rodrigues)."""
    v = np.asarray(axis_angle, dtype=np.float64).reshape(3)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def is_valid_pose(pose: np.ndarray, tolerance: float = 1e-4) -> bool:
    """True when ``pose`` is a finite (4, 4) rigid transform (orthonormal rotation, det +1)."""
    pose = np.asarray(pose)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        return False
    rotation = pose[:3, :3]
    return (np.allclose(rotation @ rotation.T, np.eye(3), atol=tolerance)
            and abs(np.linalg.det(rotation) - 1.0) < tolerance
            and np.allclose(pose[3], [0, 0, 0, 1], atol=tolerance))
