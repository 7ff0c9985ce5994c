"""TfBuffer: chains, interpolation, extrapolation errors, cache window; TfListener over real DDS."""

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from dsac_ros.geometry import invert_pose, make_pose, pose_errors, rotation_from_axis_angle
from dsac_ros.ros.conversions import matrix_to_transform, ns_to_stamp
from dsac_ros.ros.tf_buffer import ExtrapolationError, FrameNotFoundError, TfBuffer, TfListener, slerp_xyzw
from ros_helpers import spin_until
from tf2_msgs.msg import TFMessage

S = 1_000_000_000


def pose(axis_angle, translation):
    return make_pose(rotation_from_axis_angle(np.asarray(axis_angle, dtype=float)), translation)


def assert_pose_close(a, b, tol=1e-9):
    translation_m, rotation_deg = pose_errors(a, b)
    assert translation_m < tol and rotation_deg < max(tol, 1e-6), (a, b)


@pytest.fixture
def robot_tree():
    """odom -> base_link moving along x and turning about z; static base_link -> camera."""
    buffer = TfBuffer(cache_time_s=10.0)
    base_T_cam = pose([-np.pi / 2, 0, -np.pi / 2], [0.2, 0.0, 0.5])
    buffer.set_transform("base_link", "camera", 0, base_T_cam, static=True)
    buffer.set_transform("odom", "base_link", 10 * S, pose([0, 0, 0.0], [1.0, 0, 0]))
    buffer.set_transform("odom", "base_link", 12 * S, pose([0, 0, np.pi / 2], [3.0, 2.0, 0]))
    return buffer, base_T_cam


def test_chain_through_static_and_dynamic_edges(robot_tree):
    buffer, base_T_cam = robot_tree
    odom_T_cam = buffer.lookup("odom", "camera", 12 * S)
    assert_pose_close(odom_T_cam, pose([0, 0, np.pi / 2], [3.0, 2.0, 0]) @ base_T_cam)
    # The opposite direction is the inverse; a lookup between siblings goes through the common parent.
    assert_pose_close(buffer.lookup("camera", "odom", 12 * S), invert_pose(odom_T_cam))
    buffer.set_transform("base_link", "lidar", 0, pose([0, 0, 0], [0.0, 0.0, 1.0]), static=True)
    assert_pose_close(buffer.lookup("camera", "lidar", 11 * S), invert_pose(base_T_cam) @ pose([0, 0, 0], [0, 0, 1.0]))


def test_interpolates_translation_linearly_and_rotation_by_slerp(robot_tree):
    buffer, _ = robot_tree
    odom_T_base = buffer.lookup("odom", "base_link", 11 * S)
    assert_pose_close(odom_T_base, pose([0, 0, np.pi / 4], [2.0, 1.0, 0]))
    quarter = buffer.lookup("odom", "base_link", 10 * S + S // 2)
    assert_pose_close(quarter, pose([0, 0, np.pi / 8], [1.5, 0.5, 0]))


def test_slerp_takes_the_short_way_round():
    q0 = np.array([0.0, 0.0, 0.0, 1.0])
    q1 = -np.array([0.0, 0.0, np.sin(np.pi / 8), np.cos(np.pi / 8)])  # 45 deg about z, other sign
    half = slerp_xyzw(q0, q1, 0.5)
    expected = np.array([0.0, 0.0, np.sin(np.pi / 16), np.cos(np.pi / 16)])
    assert np.allclose(half, expected) or np.allclose(half, -expected)


def test_stamps_outside_the_buffer_raise_extrapolation_errors(robot_tree):
    buffer, _ = robot_tree
    with pytest.raises(ExtrapolationError, match="future"):
        buffer.lookup("odom", "camera", 12 * S + 1)
    with pytest.raises(ExtrapolationError, match="past"):
        buffer.lookup("odom", "camera", 10 * S - 1)
    assert not buffer.can_transform("odom", "camera", 13 * S)
    assert buffer.can_transform("odom", "camera", 12 * S)


def test_unknown_and_unconnected_frames_are_named(robot_tree):
    buffer, _ = robot_tree
    with pytest.raises(FrameNotFoundError, match="'map'"):
        buffer.lookup("map", "camera", 11 * S)
    buffer.set_transform("world", "marker", 11 * S, np.eye(4))
    with pytest.raises(FrameNotFoundError, match="not connected"):
        buffer.lookup("marker", "camera", 11 * S)


def test_stamp_zero_means_latest_common_time(robot_tree):
    buffer, base_T_cam = robot_tree
    assert_pose_close(buffer.lookup("odom", "camera", 0), pose([0, 0, np.pi / 2], [3.0, 2.0, 0]) @ base_T_cam)
    # A static-only chain is available at any stamp.
    assert_pose_close(buffer.lookup("base_link", "camera", 123 * S), base_T_cam)


def test_cache_window_drops_old_samples_and_clear_forgets(robot_tree):
    buffer, base_T_cam = robot_tree
    buffer.set_transform("odom", "base_link", 30 * S, np.eye(4))
    with pytest.raises(ExtrapolationError):
        buffer.lookup("odom", "base_link", 12 * S)  # pruned: older than 30 s - 10 s
    assert not buffer.set_transform("odom", "base_link", 5 * S, np.eye(4))
    assert buffer.dropped_old == 1
    buffer.clear(keep_static=True)
    assert_pose_close(buffer.lookup("base_link", "camera", 1 * S), base_T_cam)
    with pytest.raises(FrameNotFoundError):
        buffer.lookup("odom", "base_link", 30 * S)
    buffer.clear()
    assert buffer.frames() == {}


def test_new_parent_replaces_the_old_edge():
    buffer = TfBuffer()
    buffer.set_transform("odom", "base_link", 1 * S, np.eye(4))
    buffer.set_transform("map", "base_link", 2 * S, pose([0, 0, 0], [1, 2, 3]))
    assert buffer.frames() == {"base_link": "map"}
    with pytest.raises(FrameNotFoundError):
        buffer.lookup("odom", "base_link", 2 * S)


def test_rejects_non_finite_and_self_transforms():
    buffer = TfBuffer()
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError):
        buffer.set_transform("a", "b", 1, bad)
    with pytest.raises(ValueError):
        buffer.set_transform("a", "a", 1, np.eye(4))


def _stamped(parent, child, stamp_ns, parent_T_child):
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.transform = matrix_to_transform(parent_T_child)
    return msg


def test_listener_fills_the_buffer_from_tf_and_latched_tf_static():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        talker = rclpy.create_node("tf_talker", context=context)
        listener_node = rclpy.create_node("tf_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(talker)
        executor.add_node(listener_node)
        static_pub = talker.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        dynamic_pub = talker.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        base_T_cam = pose([-np.pi / 2, 0, -np.pi / 2], [0.2, 0.0, 0.5])
        # Published before the listener exists: only a transient-local subscription gets it.
        static_pub.publish(TFMessage(transforms=[_stamped("base_link", "camera", 0, base_T_cam)]))
        buffer = TfBuffer()
        TfListener(listener_node, buffer)
        assert spin_until(executor, lambda: buffer.can_transform("base_link", "camera"), 10.0)

        def publish_and_check():
            dynamic_pub.publish(TFMessage(transforms=[_stamped("odom", "base_link", 5 * S, pose([0, 0, 0.3], [1, 2, 0]))]))
            return buffer.can_transform("odom", "camera", 5 * S)

        assert spin_until(executor, publish_and_check, 10.0)
        assert_pose_close(buffer.lookup("odom", "camera", 5 * S), pose([0, 0, 0.3], [1, 2, 0]) @ base_T_cam, 1e-6)
        executor.shutdown()
        talker.destroy_node()
        listener_node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
