"""The ROS parts are real: built interfaces exchanged between two rclpy nodes over DDS.

No skip here: if rclpy or the built dsac_ros / tf2_msgs interfaces are missing, these fail.
"""

import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from dsac_ros.msg import LocalizationStatus
from ros_helpers import spin_until
from tf2_msgs.msg import TFMessage


@pytest.fixture
def two_nodes():
    context = rclpy.Context()
    rclpy.init(context=context)
    talker = rclpy.create_node("test_talker", context=context)
    listener = rclpy.create_node("test_listener", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(talker)
    executor.add_node(listener)
    yield talker, listener, executor
    executor.shutdown()
    talker.destroy_node()
    listener.destroy_node()
    rclpy.shutdown(context=context)


def test_localization_status_round_trips_over_dds(two_nodes):
    talker, listener, executor = two_nodes
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    received = []
    listener.create_subscription(LocalizationStatus, "status", received.append, qos)
    publisher = talker.create_publisher(LocalizationStatus, "status", qos)

    sent = LocalizationStatus()
    sent.header.frame_id = "map"
    sent.header.stamp.sec = 42
    sent.state = LocalizationStatus.STATE_LOST
    sent.state_name = "LOST"
    sent.reason = "37 inliers < min_inliers 50"
    sent.inlier_count = 37
    sent.inlier_ratio = 0.25
    sent.hypotheses_requested = 64
    sent.hypotheses_valid = 61
    sent.total_ms = 41.5
    sent.device = "cpu"
    publisher.publish(sent)

    assert spin_until(executor, lambda: len(received) > 0), "no LocalizationStatus arrived over DDS"
    got = received[0]
    assert got.state == LocalizationStatus.STATE_LOST
    assert (got.state_name, got.reason, got.device) == ("LOST", sent.reason, "cpu")
    assert (got.inlier_count, got.hypotheses_requested, got.hypotheses_valid) == (37, 64, 61)
    assert got.header.stamp.sec == 42 and got.header.frame_id == "map"
    assert got.inlier_ratio == pytest.approx(0.25) and got.total_ms == pytest.approx(41.5)


def test_state_constants_are_distinct():
    states = {name: getattr(LocalizationStatus, name) for name in dir(LocalizationStatus)
              if name.startswith("STATE_")}
    assert set(states) == {"STATE_OK", "STATE_LOST", "STATE_NO_IMAGE", "STATE_BAD_INPUT", "STATE_NO_MODEL"}
    assert len(set(states.values())) == len(states)


def test_tf_message_round_trips_over_dds(two_nodes):
    talker, listener, executor = two_nodes
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    received = []
    listener.create_subscription(TFMessage, "/tf", received.append, qos)
    publisher = talker.create_publisher(TFMessage, "/tf", qos)

    transform = TransformStamped()
    transform.header.frame_id = "map"
    transform.child_frame_id = "odom"
    transform.transform.translation.x = 1.5
    transform.transform.rotation.z = 0.6
    transform.transform.rotation.w = 0.8

    # A volatile subscription only sees messages sent after matching: publish until one arrives.
    def published_and_received():
        publisher.publish(TFMessage(transforms=[transform]))
        return len(received) > 0

    assert spin_until(executor, published_and_received), "no TFMessage arrived over DDS"
    got = received[0].transforms[0]
    assert (got.header.frame_id, got.child_frame_id) == ("map", "odom")
    assert got.transform.translation.x == pytest.approx(1.5)
    assert (got.transform.rotation.z, got.transform.rotation.w) == (pytest.approx(0.6), pytest.approx(0.8))
