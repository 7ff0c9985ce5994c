"""The localizer node over real DDS: in-process executors, a real map of the tiny scene.

One module-scoped harness holds a helper node (publishers, subscribers) and two localizer
nodes, `/rgb/localizer` and `/rgbd/localizer` (use_depth), sharing one executor. Stamps sent to
a node only move forward until the last test, which sends a stamp from the past on purpose.
Waits are bounded by timeouts; nothing asserts on time.
"""

from __future__ import annotations

import dataclasses
import sys
import threading

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, TransformStamped
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from dsac_ros.data.images import encode_image
from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import invert_pose, make_pose, pose_errors, rotation_from_axis_angle
from dsac_ros.msg import LocalizationStatus
from dsac_ros.ros.conversions import matrix_to_pose, matrix_to_transform, ns_to_stamp, pose_to_matrix, stamp_to_ns, \
    transform_to_matrix
from dsac_ros.ros.node import LocalizerNode, sensor_qos, stamp_seed
from fixtures_maps import FIT_STRIDE, tiny_map_path  # noqa: F401 (fixture)
from ros_helpers import spin_until
from tf2_msgs.msg import TFMessage
from tolerances import check_below

pytestmark = pytest.mark.ros

S = 1_000_000_000
CAMERA_FRAME = "camera_optical"
TOLERANCE_S = 0.25
MIN_INLIERS = 20
MIN_INLIER_RATIO = 0.1
# The camera sits on the robot 0.2 m ahead and 0.5 m up, looking along the body's x axis:
# optical z (forward) = body x, optical x (right) = body -y, optical y (down) = body -z.
BASE_T_CAM = make_pose(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), [0.2, 0.0, 0.5])
# Where the odometry frame really sits in the map.
MAP_T_ODOM = make_pose(rotation_from_axis_angle([0, 0, 0.4]), [0.7, -0.3, 0.0])
WAIT_S = 30.0


@pytest.fixture(scope="module")
def tiny_frames():
    """The tiny scene's mapping frames the test map was fitted on (160 x 120, ground-truth poses)."""
    return list(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE))


@pytest.fixture(scope="module")
def offline(tiny_map_path):
    """Offline results of the same map with the node's gating: {(frame index, stamp, depth?): result}."""
    from dsac_ros.dsac import RansacOptions
    from dsac_ros.localizer import Localizer

    localizer = Localizer(tiny_map_path, device="cpu", ransac=RansacOptions())
    cache = {}

    def run(frame, stamp_ns, with_depth=False, hypotheses=64):
        key = (frame.name, stamp_ns, with_depth, hypotheses)
        if key not in cache:
            cache[key] = localizer.localize(frame.image_rgb, frame.intrinsics,
                                            depth_m=frame.depth_m if with_depth else None,
                                            ransac=RansacOptions(hypotheses=hypotheses), seed=stamp_seed(stamp_ns))
        return cache[key]

    return run


def node_accepts(result) -> bool:
    return bool(result.success and result.inlier_count >= MIN_INLIERS and result.inlier_ratio >= MIN_INLIER_RATIO)


class Harness:
    """A helper node talking to the localizer nodes; everything received is kept per topic."""

    def __init__(self, context, map_path):
        self.context = context
        common = [Parameter("map_path", value=str(map_path)), Parameter("device", value="cpu"),
                  Parameter("min_inliers", value=MIN_INLIERS), Parameter("min_inlier_ratio", value=MIN_INLIER_RATIO),
                  Parameter("transform_tolerance", value=TOLERANCE_S), Parameter("tf_mode", value="map_to_camera")]
        self.nodes = {
            "rgb": LocalizerNode(context=context, namespace="/rgb", parameter_overrides=common),
            "rgbd": LocalizerNode(context=context, namespace="/rgbd", parameter_overrides=common + [
                Parameter("use_depth", value=True), Parameter("publish_tf", value=False)]),
        }
        self.helper = rclpy.create_node("test_helper", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.helper)
        for node in self.nodes.values():
            self.executor.add_node(node)
        self.received = {"tf": []}
        self.publishers = {}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for ns in self.nodes:
            for topic, kind in (("status", LocalizationStatus), ("pose", PoseStamped),
                                ("pose_with_covariance", PoseWithCovarianceStamped)):
                store = self.received.setdefault((ns, topic), [])
                self.helper.create_subscription(kind, f"/{ns}/localizer/{topic}", store.append, reliable)
            self.publishers[ns] = {
                "image": self.helper.create_publisher(Image, f"/{ns}/image", sensor_qos()),
                "camera_info": self.helper.create_publisher(CameraInfo, f"/{ns}/camera_info", sensor_qos()),
                "depth": self.helper.create_publisher(Image, f"/{ns}/depth", sensor_qos()),
                "initialpose": self.helper.create_publisher(PoseWithCovarianceStamped, f"/{ns}/initialpose",
                                                            QoSProfile(depth=1)),
            }
        self.helper.create_subscription(TFMessage, "/tf", lambda msg: self.received["tf"].extend(msg.transforms),
                                        reliable)
        self.diagnostics = []
        self.helper.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, reliable)
        self.tf_pub = self.helper.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        self.tf_static_pub = self.helper.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        for ns in self.nodes:
            assert self.spin_until(lambda: all(
                pub.get_subscription_count() > 0 for name, pub in self.publishers[ns].items() if name != "depth"))
        assert self.spin_until(lambda: self.publishers["rgbd"]["depth"].get_subscription_count() > 0)

    def spin_until(self, condition, timeout_s=WAIT_S):
        return spin_until(self.executor, condition, timeout_s)

    # --- sending
    def send_camera_info(self, ns, intrinsics, k=None, distortion_model="plumb_bob", d=(0.0,) * 5, stamp_ns=0):
        msg = CameraInfo(width=intrinsics.width_px, height=intrinsics.height_px, distortion_model=distortion_model)
        msg.header.frame_id = CAMERA_FRAME
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.k = [float(v) for v in (k if k is not None else intrinsics.K.reshape(9))]
        msg.d = [float(v) for v in d]
        node = self.nodes[ns]
        # Best effort: resend until the node has it (nothing else is in flight on this topic).
        assert self.spin_until(lambda: self._publish_and_check(
            self.publishers[ns]["camera_info"], msg, lambda: node._camera_info is not None
            and list(node._camera_info.k) == list(msg.k) and list(node._camera_info.d) == list(msg.d)
            and node._camera_info.distortion_model == msg.distortion_model))

    @staticmethod
    def _publish_and_check(publisher, msg, condition):
        if condition():
            return True
        publisher.publish(msg)
        return False

    def send_image(self, ns, image_rgb, stamp_ns, encoding="rgb8"):
        step, data = encode_image(image_rgb, "rgb8")
        msg = Image(encoding=encoding, height=image_rgb.shape[0], width=image_rgb.shape[1], step=step)
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), CAMERA_FRAME
        msg.data = data
        node = self.nodes[ns]
        received = node.frames_received
        self.publishers[ns]["image"].publish(msg)
        # One image per wait: best effort over loopback does not lose it, but confirm delivery.
        assert self.spin_until(lambda: node.frames_received > received, 10.0), "image did not reach the node"

    def send_depth(self, ns, depth_m, stamp_ns):
        step, data = encode_image(depth_m, "32FC1")
        msg = Image(encoding="32FC1", height=depth_m.shape[0], width=depth_m.shape[1], step=step)
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), CAMERA_FRAME
        msg.data = data
        node = self.nodes[ns]
        self.publishers[ns]["depth"].publish(msg)
        assert self.spin_until(lambda: stamp_ns in node._depth_msgs, 10.0), "depth did not reach the node"

    def send_tf(self, parent, child, stamp_ns, parent_T_child, static=False):
        transform = TransformStamped()
        transform.header.stamp, transform.header.frame_id = ns_to_stamp(stamp_ns), parent
        transform.child_frame_id = child
        transform.transform = matrix_to_transform(parent_T_child)
        (self.tf_static_pub if static else self.tf_pub).publish(TFMessage(transforms=[transform]))

    # --- receiving
    def status_for(self, ns, stamp_ns, timeout_s=WAIT_S) -> LocalizationStatus:
        store = self.received[(ns, "status")]

        def find():
            return next((s for s in store if stamp_to_ns(s.header.stamp) == stamp_ns), None)

        assert self.spin_until(lambda: find() is not None, timeout_s), f"no status for stamp {stamp_ns}"
        return find()

    def messages_for(self, ns, topic, stamp_ns):
        return [m for m in self.received[(ns, topic)] if stamp_to_ns(m.header.stamp) == stamp_ns]

    def tf_for(self, parent, child, stamp_ns, timeout_s=10.0):
        def find():
            return next((t for t in self.received["tf"] if t.header.frame_id == parent and t.child_frame_id == child
                         and stamp_to_ns(t.header.stamp) == stamp_ns), None)

        self.spin_until(lambda: find() is not None, timeout_s)
        return find()

    def localise(self, ns, frame, stamp_ns, with_depth=False):
        if with_depth:
            self.send_depth(ns, frame.depth_m, stamp_ns)
        self.send_image(ns, frame.image_rgb, stamp_ns)
        return self.status_for(ns, stamp_ns)


@pytest.fixture(scope="module")
def harness(tiny_map_path, tiny_frames):
    context = rclpy.Context()
    rclpy.init(context=context)
    harness = Harness(context, tiny_map_path)
    harness.send_camera_info("rgb", tiny_frames[0].intrinsics)  # rgbd gets its own in its test
    yield harness
    harness.executor.shutdown()
    for node in harness.nodes.values():
        node.destroy_node()
    harness.helper.destroy_node()
    rclpy.shutdown(context=context)


def set_parameters(harness, ns, **values):
    node = harness.nodes[ns]
    results = node.set_parameters([Parameter(name.replace("__", "."), value=value) for name, value in values.items()])
    assert all(r.successful for r in results), results


def test_frames_come_back_as_pose_covariance_and_tf_matching_the_offline_map(harness, tiny_frames, offline):
    accepted = 0
    for frame in tiny_frames:
        stamp_ns = frame.stamp_ns
        status = harness.localise("rgb", frame, stamp_ns)
        expected = offline(frame, stamp_ns)
        assert (status.state == LocalizationStatus.STATE_OK) == node_accepts(expected), status.reason
        assert status.header.frame_id == "map" and status.hypotheses_requested == 64
        poses = harness.messages_for("rgb", "pose", stamp_ns)
        if status.state != LocalizationStatus.STATE_OK:
            assert status.state == LocalizationStatus.STATE_LOST and status.reason
            assert not poses
            continue
        accepted += 1
        assert status.inlier_count == expected.inlier_count
        assert harness.spin_until(lambda: len(harness.messages_for("rgb", "pose_with_covariance", stamp_ns)) == 1
                                  and len(harness.messages_for("rgb", "pose", stamp_ns)) == 1)
        poses = harness.messages_for("rgb", "pose", stamp_ns)
        assert poses[0].header.frame_id == "map"
        with_covariance = harness.messages_for("rgb", "pose_with_covariance", stamp_ns)[0]
        assert with_covariance.header.frame_id == "map"
        covariance = np.asarray(with_covariance.pose.covariance).reshape(6, 6)
        assert np.all(np.isfinite(covariance)) and np.all(np.diag(covariance) > 0)
        map_T_cam = pose_to_matrix(poses[0].pose)
        # Same map, same seed: the node reproduces the offline pose and so its accuracy.
        node_vs_offline = pose_errors(map_T_cam, expected.world_T_cam)
        check_below("node_vs_offline[0]", node_vs_offline[0], 1e-5)
        check_below("node_vs_offline[1]", node_vs_offline[1], 1e-3)
        node_error = pose_errors(map_T_cam, frame.world_T_cam)
        offline_error = pose_errors(expected.world_T_cam, frame.world_T_cam)
        assert node_error[0] <= offline_error[0] + 1e-5 and node_error[1] <= offline_error[1] + 1e-3
        tf = harness.tf_for("map", CAMERA_FRAME, stamp_ns + int(TOLERANCE_S * S))
        assert tf is not None, "no map -> camera TF stamped image stamp + transform_tolerance"
        tf_pose = transform_to_matrix(tf.transform)
        check_below("pose_errors(tf_pose, map_T_cam)[0]", pose_errors(tf_pose, map_T_cam)[0], 1e-6)
    assert accepted >= len(tiny_frames) // 2, f"only {accepted} of {len(tiny_frames)} frames localised"


def test_map_to_odom_follows_moving_odometry_through_a_static_camera_mount(harness, tiny_frames, offline):
    set_parameters(harness, "rgb", tf_mode="map_to_odom", pose_target="base")
    node = harness.nodes["rgb"]
    harness.send_tf("base_link", CAMERA_FRAME, 0, BASE_T_CAM, static=True)
    assert harness.spin_until(lambda: node.tf_buffer.can_transform("base_link", CAMERA_FRAME))
    checked = 0
    shift_s = 100 * S  # a later pass: stamps keep moving forward
    for frame in tiny_frames:
        stamp_ns = frame.stamp_ns + shift_s
        expected = offline(frame, stamp_ns)
        if not node_accepts(expected):
            continue
        # The robot moves: odometry samples 50 ms either side, interpolated to the image stamp.
        odom_T_base = invert_pose(MAP_T_ODOM) @ frame.world_T_cam @ invert_pose(BASE_T_CAM)
        for offset_ns, step_m in ((-S // 20, -0.05), (S // 20, 0.05)):
            harness.send_tf("odom", "base_link", stamp_ns + offset_ns, odom_T_base @ make_pose(np.eye(3), [step_m, 0, 0]))
        assert harness.spin_until(lambda: node.tf_buffer.can_transform("odom", "base_link", stamp_ns + S // 20))
        status = harness.localise("rgb", frame, stamp_ns)
        assert status.state == LocalizationStatus.STATE_OK, status.reason
        tf = harness.tf_for("map", "odom", stamp_ns + int(TOLERANCE_S * S))
        assert tf is not None, "no map -> odom TF stamped image stamp + transform_tolerance"
        map_T_odom = transform_to_matrix(tf.transform)
        # Exactly the chain: estimated camera pose, static mount, odometry at the image stamp.
        chained = expected.world_T_cam @ invert_pose(BASE_T_CAM) @ invert_pose(odom_T_base)
        check_below("pose_errors(map_T_odom, chained)[0]", pose_errors(map_T_odom, chained)[0], 1e-5)
        check_below("pose_errors(map_T_odom, chained)[1]", pose_errors(map_T_odom, chained)[1], 1e-3)
        # And the true map -> odom up to the localisation's own rotation error.
        offline_rotation_deg = pose_errors(expected.world_T_cam, frame.world_T_cam)[1]
        assert pose_errors(map_T_odom, MAP_T_ODOM)[1] <= offline_rotation_deg + 1e-3
        # ~/pose carries the base pose (pose_target base).
        assert harness.spin_until(lambda: harness.messages_for("rgb", "pose", stamp_ns))
        base_pose = pose_to_matrix(harness.messages_for("rgb", "pose", stamp_ns)[0].pose)
        check_below("pose_errors(base_pose, expected.world_T_cam @ invert_pose(BASE_T_CAM))[0]", pose_errors(base_pose, expected.world_T_cam @ invert_pose(BASE_T_CAM))[0], 1e-5)
        checked += 1
        if checked == 2:
            break
    assert checked == 2
    set_parameters(harness, "rgb", tf_mode="map_to_camera", pose_target="camera")


def test_estimates_with_too_little_support_are_lost_and_not_published(harness, tiny_frames, offline):
    frame = tiny_frames[0]
    stamp_ns = frame.stamp_ns + 150 * S
    expected = offline(frame, stamp_ns)
    assert node_accepts(expected)
    # Too few inliers: one more than this frame has.
    set_parameters(harness, "rgb", min_inliers=expected.inlier_count + 1)
    status = harness.localise("rgb", frame, stamp_ns)
    assert status.state == LocalizationStatus.STATE_LOST and status.state_name == "LOST"
    assert f"{expected.inlier_count} inliers < min_inliers {expected.inlier_count + 1}" in status.reason
    assert status.inlier_count == expected.inlier_count
    set_parameters(harness, "rgb", min_inliers=MIN_INLIERS)
    # Inlier ratio below the threshold. A fitted frame can have every cell an inlier (ratio 1.0,
    # which no threshold <= 1 rejects), so half of the image is replaced by seeded noise: those
    # cells become outliers and the ratio falls well below 1 on any machine's fit.
    stamp_ns += S // 10
    half = frame.image_rgb.copy()
    half[:, half.shape[1] // 2:] = np.random.default_rng(0).integers(0, 256, half[:, half.shape[1] // 2:].shape)
    half_frame = dataclasses.replace(frame, image_rgb=half, name=frame.name + "_half_noise")
    expected = offline(half_frame, stamp_ns)
    assert node_accepts(expected) and expected.inlier_ratio < 0.9, expected
    set_parameters(harness, "rgb", min_inlier_ratio=expected.inlier_ratio + 0.01)
    status = harness.localise("rgb", half_frame, stamp_ns)
    assert status.state == LocalizationStatus.STATE_LOST and "min_inlier_ratio" in status.reason
    set_parameters(harness, "rgb", min_inlier_ratio=MIN_INLIER_RATIO)
    # A good frame after them is published; the LOST ones were not.
    stamp_ns += S // 10
    assert harness.localise("rgb", frame, stamp_ns).state == LocalizationStatus.STATE_OK
    assert harness.spin_until(lambda: harness.messages_for("rgb", "pose", stamp_ns))
    for lost_ns in (stamp_ns - S // 5, stamp_ns - S // 10):
        assert not harness.messages_for("rgb", "pose", lost_ns)
        assert not harness.messages_for("rgb", "pose_with_covariance", lost_ns)


def test_bad_inputs_are_reported_and_the_next_good_frame_localises(harness, tiny_frames, offline):
    frame = next(f for f in tiny_frames if node_accepts(offline(f, f.stamp_ns + 200 * S)))
    stamp_ns = frame.stamp_ns + 200 * S - S  # a second of bad frames before the good one
    cases = [
        ("yuv_weird", frame.image_rgb, "unknown image encoding 'yuv_weird'"),
        ("rgb8", frame.image_rgb[:60, :80].copy(), "80x60 but CameraInfo is for 160x120"),
        ("rgb8", np.zeros_like(frame.image_rgb), "uniform"),
    ]
    for encoding, image, reason in cases:
        stamp_ns += S // 10
        harness.send_image("rgb", image, stamp_ns, encoding=encoding)
        status = harness.status_for("rgb", stamp_ns)
        assert status.state == LocalizationStatus.STATE_BAD_INPUT and reason in status.reason, status.reason
    harness.send_camera_info("rgb", frame.intrinsics, k=[0.0] * 9)
    stamp_ns += S // 10
    harness.send_image("rgb", frame.image_rgb, stamp_ns)
    status = harness.status_for("rgb", stamp_ns)
    assert status.state == LocalizationStatus.STATE_BAD_INPUT and "uncalibrated" in status.reason
    # A lens model the camera module cannot undistort is refused with its name (the bag reader
    # refuses it the same way: test_lens.py).
    harness.send_camera_info("rgb", frame.intrinsics, distortion_model="kannala_brandt", d=(0.1, 0.01, 0.0, 0.0))
    stamp_ns += S // 10
    harness.send_image("rgb", frame.image_rgb, stamp_ns)
    status = harness.status_for("rgb", stamp_ns)
    assert status.state == LocalizationStatus.STATE_BAD_INPUT
    assert "'kannala_brandt' with nonzero coefficients is not supported" in status.reason, status.reason
    harness.send_camera_info("rgb", frame.intrinsics)
    good_stamp = frame.stamp_ns + 200 * S
    assert harness.localise("rgb", frame, good_stamp).state == LocalizationStatus.STATE_OK
    assert harness.spin_until(lambda: harness.messages_for("rgb", "pose", good_stamp))
    # Nothing was published for the bad frames.
    published = {stamp_to_ns(m.header.stamp) for m in harness.received[("rgb", "pose")]}
    assert not published & set(range(good_stamp - S, good_stamp, S // 10))


def test_a_frame_takes_the_camera_info_of_its_own_stamp_else_the_newest(harness, tiny_frames, offline):
    frame = next(f for f in tiny_frames if node_accepts(offline(f, f.stamp_ns + 250 * S)))
    stamp_ns = frame.stamp_ns + 250 * S - S // 10
    # The CameraInfo stamped like the frame is uncalibrated; a newer one (stamp 0) is good.
    harness.send_camera_info("rgb", frame.intrinsics, k=[0.0] * 9, stamp_ns=stamp_ns)
    harness.send_camera_info("rgb", frame.intrinsics)
    harness.send_image("rgb", frame.image_rgb, stamp_ns)
    status = harness.status_for("rgb", stamp_ns)
    assert status.state == LocalizationStatus.STATE_BAD_INPUT and "uncalibrated" in status.reason, status.reason
    # No CameraInfo with this stamp: the newest applies.
    assert harness.localise("rgb", frame, frame.stamp_ns + 250 * S).state == LocalizationStatus.STATE_OK


def test_rgbd_node_needs_camera_info_and_valid_depth(harness, tiny_frames, offline):
    frame = next(f for f in tiny_frames if node_accepts(offline(f, f.stamp_ns, with_depth=True)))
    assert harness.nodes["rgbd"]._camera_info is None
    stamp_ns = frame.stamp_ns - S
    harness.send_depth("rgbd", frame.depth_m, stamp_ns)
    harness.send_image("rgbd", frame.image_rgb, stamp_ns)
    status = harness.status_for("rgbd", stamp_ns)
    assert status.state == LocalizationStatus.STATE_BAD_INPUT and "no CameraInfo" in status.reason
    harness.send_camera_info("rgbd", frame.intrinsics)
    stamp_ns += S // 10
    harness.send_depth("rgbd", np.full_like(frame.depth_m, np.nan), stamp_ns)
    harness.send_image("rgbd", frame.image_rgb, stamp_ns)
    status = harness.status_for("rgbd", stamp_ns)
    assert status.state == LocalizationStatus.STATE_BAD_INPUT and "depth" in status.reason
    assert not harness.messages_for("rgbd", "pose", stamp_ns)
    status = harness.localise("rgbd", frame, frame.stamp_ns, with_depth=True)
    assert status.state == LocalizationStatus.STATE_OK, status.reason
    expected = offline(frame, frame.stamp_ns, with_depth=True)
    assert harness.spin_until(lambda: harness.messages_for("rgbd", "pose", frame.stamp_ns))
    pose = pose_to_matrix(harness.messages_for("rgbd", "pose", frame.stamp_ns)[0].pose)
    check_below("pose_errors(pose, expected.world_T_cam)[0]", pose_errors(pose, expected.world_T_cam)[0], 1e-5)


def test_parameter_sets_out_of_range_are_rejected_and_hypotheses_change_takes_effect(harness, tiny_frames):
    client = harness.helper.create_client(SetParameters, "/rgb/localizer/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    for parameter, reason in ((Parameter("ransac.hypotheses", value=0), "out of range"),
                              (Parameter("min_inlier_ratio", value=1.5), "out of range"),
                              (Parameter("retrieve_frames", value=-1), "out of range"),
                              (Parameter("tf_mode", value="map_to_moon"), "tf_mode must be one of"),
                              (Parameter("use_depth", value=True), "read-only")):
        future = client.call_async(SetParameters.Request(parameters=[parameter.to_parameter_msg()]))
        assert harness.spin_until(future.done, 10.0)
        result = future.result().results[0]
        assert not result.successful and reason in result.reason, result.reason
    node = harness.nodes["rgb"]
    assert node.get_parameter("ransac.hypotheses").value == 64
    assert node.get_parameter("tf_mode").value == "map_to_camera"

    future = client.call_async(SetParameters.Request(parameters=[Parameter("ransac.hypotheses", value=4).to_parameter_msg()]))
    assert harness.spin_until(future.done, 10.0) and future.result().results[0].successful
    frame = tiny_frames[0]
    stamp_ns = frame.stamp_ns + 300 * S
    status = harness.localise("rgb", frame, stamp_ns)
    assert status.hypotheses_requested == 4 and status.hypotheses_valid <= 4
    set_parameters(harness, "rgb", ransac__hypotheses=64)
    status = harness.localise("rgb", frame, stamp_ns + S // 10)
    assert status.hypotheses_requested == 64 and status.hypotheses_valid > 4
    harness.helper.destroy_client(client)


def test_a_burst_drops_stale_frames_and_processes_the_newest(harness, tiny_frames):
    node = harness.nodes["rgb"]
    localizer = node._localizer
    release = threading.Event()
    entered = threading.Event()
    original = localizer.localize

    def held_localize(*args, **kwargs):
        entered.set()
        assert release.wait(WAIT_S)
        return original(*args, **kwargs)

    localizer.localize = held_localize  # holds the worker on the first frame while the burst arrives
    try:
        dropped_before = node.frames_dropped
        base_ns = tiny_frames[0].stamp_ns + 400 * S
        stamps = [base_ns + i * S // 100 for i in range(6)]  # 100 Hz, far faster than processing
        harness.send_image("rgb", tiny_frames[0].image_rgb, stamps[0])
        assert harness.spin_until(entered.is_set)
        for i, stamp_ns in enumerate(stamps[1:], start=1):
            harness.send_image("rgb", tiny_frames[i % len(tiny_frames)].image_rgb, stamp_ns)
        release.set()
        last = harness.status_for("rgb", stamps[-1])
    finally:
        release.set()
        del localizer.localize
    # The first frame (held) and the newest were processed; the four in between were dropped.
    processed = {stamp_to_ns(s.header.stamp) for s in harness.received[("rgb", "status")]} & set(stamps)
    assert processed == {stamps[0], stamps[-1]}
    assert node.frames_dropped - dropped_before == 4
    assert last.frames_dropped == node.frames_dropped


def test_a_map_swap_under_load_says_so_and_never_localises_against_a_half_loaded_map(harness, tiny_map_path,
                                                                                    tiny_frames, tmp_path):
    import shutil

    from dsac_ros.ros.node import default_localizer_factory

    new_map = tmp_path / "tiny_copy.pt"
    shutil.copy(tiny_map_path, new_map)
    loading, release = threading.Event(), threading.Event()

    def slow_factory(settings):
        if settings.map_path == str(new_map):  # the new map "loads" until the test releases it
            loading.set()
            assert release.wait(WAIT_S)
        return default_localizer_factory(settings)

    node = LocalizerNode(context=harness.context, namespace="/swap", localizer_factory=slow_factory,
                         parameter_overrides=[Parameter("map_path", value=str(tiny_map_path)),
                                              Parameter("device", value="cpu"),
                                              Parameter("min_inliers", value=MIN_INLIERS),
                                              Parameter("tf_mode", value="map_to_camera")])
    harness.executor.add_node(node)
    statuses = harness.received.setdefault(("swap", "status"), [])
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    sub = harness.helper.create_subscription(LocalizationStatus, "/swap/localizer/status", statuses.append, reliable)
    harness.nodes["swap"] = node
    harness.publishers["swap"] = {"image": harness.helper.create_publisher(Image, "/swap/image", sensor_qos()),
                                  "camera_info": harness.helper.create_publisher(CameraInfo, "/swap/camera_info",
                                                                                 sensor_qos())}
    try:
        assert harness.spin_until(lambda: node.model_loaded and all(
            pub.get_subscription_count() > 0 for pub in harness.publishers["swap"].values()))
        harness.send_camera_info("swap", tiny_frames[0].intrinsics)
        base_ns = tiny_frames[0].stamp_ns + 600 * S
        before = harness.localise("swap", tiny_frames[1], base_ns)
        assert before.state == LocalizationStatus.STATE_OK and before.map_path == str(tiny_map_path)

        node.set_parameters([Parameter("map_path", value=str(new_map))])
        assert harness.spin_until(loading.is_set)
        during = [base_ns + i * S for i in (1, 2, 3)]
        for i, stamp_ns in enumerate(during):
            harness.send_image("swap", tiny_frames[i].image_rgb, stamp_ns)
        # While the new map loads: a NO_MODEL status that says so, and no frame localised.
        assert harness.spin_until(lambda: any(s.state == LocalizationStatus.STATE_NO_MODEL
                                              and s.reason == f"loading map {new_map}" for s in statuses))
        assert not any(stamp_to_ns(s.header.stamp) in during for s in statuses)
        assert not node.model_loaded
        dropped = node.frames_dropped
        release.set()
        # Loaded: the newest waiting frame localises against the new map; the older ones were dropped.
        after = harness.status_for("swap", during[-1])
        assert after.state == LocalizationStatus.STATE_OK and after.map_path == str(new_map)
        assert not any(stamp_to_ns(s.header.stamp) in during[:-1] for s in statuses)
        assert node.frames_dropped == dropped
        assert dropped >= 2  # frames 1 and 2 were replaced while the map loaded
        assert all(s.map_path in (str(tiny_map_path), str(new_map)) for s in statuses
                   if s.state == LocalizationStatus.STATE_OK)
    finally:
        release.set()
        harness.helper.destroy_subscription(sub)
        for publisher in harness.publishers.pop("swap").values():
            harness.helper.destroy_publisher(publisher)
        harness.nodes.pop("swap")
        harness.executor.remove_node(node)
        node.destroy_node()


def test_missing_map_reports_no_model_and_a_new_map_path_loads(harness, tiny_map_path, tiny_frames):
    node = LocalizerNode(context=harness.context, namespace="/nomap", parameter_overrides=[
        Parameter("map_path", value="/nonexistent/tiny.pt"), Parameter("device", value="cpu"),
        Parameter("image_timeout_s", value=0.5)])
    harness.executor.add_node(node)
    statuses = []
    sub = harness.helper.create_subscription(LocalizationStatus, "/nomap/localizer/status", statuses.append, 10)
    try:
        assert harness.spin_until(lambda: any(s.state == LocalizationStatus.STATE_NO_MODEL for s in statuses))
        no_model = next(s for s in statuses if s.state == LocalizationStatus.STATE_NO_MODEL)
        assert "/nonexistent/tiny.pt" in no_model.reason and no_model.state_name == "NO_MODEL"
        assert harness.spin_until(lambda: any(
            d.status and d.status[0].name.startswith("/nomap/localizer") and d.status[0].level == DiagnosticStatus.ERROR
            for d in harness.diagnostics))
        node.set_parameters([Parameter("map_path", value=str(tiny_map_path))])
        # Loaded in the worker; without images the node then says NO_IMAGE.
        assert harness.spin_until(lambda: any(s.state == LocalizationStatus.STATE_NO_IMAGE for s in statuses))
        assert node._localizer is not None
    finally:
        harness.helper.destroy_subscription(sub)
        harness.executor.remove_node(node)
        node.destroy_node()


def test_time_jump_back_resets_and_initialpose_seeds_map_to_odom(harness, tiny_frames, offline):
    node = harness.nodes["rgb"]
    set_parameters(harness, "rgb", tf_mode="map_to_odom")
    resets = node.resets
    past_ns = tiny_frames[0].stamp_ns - 1000 * S  # the bag loops
    frame = next(f for f in tiny_frames if node_accepts(offline(f, past_ns + 5 * S)))
    harness.send_image("rgb", np.zeros_like(frame.image_rgb), past_ns)
    assert harness.status_for("rgb", past_ns).state == LocalizationStatus.STATE_BAD_INPUT
    assert node.resets == resets + 1
    # Dynamic TF from before the jump is gone; the static camera mount stays.
    assert not node.tf_buffer.can_transform("odom", "base_link")
    assert node.tf_buffer.can_transform("base_link", CAMERA_FRAME)

    odom_T_base = invert_pose(MAP_T_ODOM) @ frame.world_T_cam @ invert_pose(BASE_T_CAM)
    harness.send_tf("odom", "base_link", past_ns + S, odom_T_base)
    harness.send_tf("odom", "base_link", past_ns + 6 * S, odom_T_base)
    assert harness.spin_until(lambda: node.tf_buffer.can_transform("odom", "base_link", past_ns + 6 * S))
    prior_map_T_base = make_pose(rotation_from_axis_angle([0, 0, 1.0]), [1.0, 2.0, 0.0])
    initialpose = PoseWithCovarianceStamped()
    initialpose.header.frame_id = "map"
    initialpose.header.stamp = ns_to_stamp(past_ns + S)
    initialpose.pose.pose = matrix_to_pose(prior_map_T_base)
    harness.publishers["rgb"]["initialpose"].publish(initialpose)
    tf = harness.tf_for("map", "odom", past_ns + S + int(TOLERANCE_S * S))
    assert tf is not None, "no map -> odom TF from initialpose"
    expected = prior_map_T_base @ invert_pose(odom_T_base)
    check_below("pose_errors(transform_to_matrix(tf.transform), expected)[0]", pose_errors(transform_to_matrix(tf.transform), expected)[0], 1e-6)

    # The first localisation after the jump replaces the prior.
    stamp_ns = past_ns + 5 * S
    assert harness.localise("rgb", frame, stamp_ns).state == LocalizationStatus.STATE_OK
    tf = harness.tf_for("map", "odom", stamp_ns + int(TOLERANCE_S * S))
    chained = offline(frame, stamp_ns).world_T_cam @ invert_pose(BASE_T_CAM) @ invert_pose(odom_T_base)
    assert tf is not None
    check_below("map -> odom vs chained", pose_errors(transform_to_matrix(tf.transform), chained)[0], 1e-5)
    set_parameters(harness, "rgb", tf_mode="map_to_camera")


def test_the_backend_is_a_parameter_and_auto_says_in_the_status_when_it_falls_back(harness, tiny_map_path,
                                                                                   monkeypatch):
    node = LocalizerNode(context=harness.context, namespace="/backend", parameter_overrides=[
        Parameter("map_path", value=str(tiny_map_path)), Parameter("device", value="cpu"),
        Parameter("image_timeout_s", value=0.3)])
    harness.executor.add_node(node)
    statuses = []
    sub = harness.helper.create_subscription(LocalizationStatus, "/backend/localizer/status", statuses.append, 10)

    def first(state, since=0, reason_part=""):
        """The first status from index ``since`` on in ``state`` whose reason holds reason_part."""
        def find():
            return next((s for s in statuses[since:] if s.state == state and reason_part in s.reason), None)

        assert harness.spin_until(lambda: find() is not None)
        return find()

    def change(name, value, state, reason_part=""):
        """Set one parameter (accepted), then the first status after it as ``first`` finds it."""
        mark = len(statuses)
        assert node.set_parameters([Parameter(name, value=value)])[0].successful
        return first(state, mark, reason_part)

    try:
        assert first(LocalizationStatus.STATE_NO_IMAGE).backend == "onnxruntime"
        rejected = node.set_parameters([Parameter("backend", value="tensorrt")])
        assert not rejected[0].successful and "auto, torch, onnxruntime" in rejected[0].reason
        # Without onnxruntime: an explicit request is NO_MODEL with the reason, the node stays up...
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        change("backend", "onnxruntime", LocalizationStatus.STATE_NO_MODEL, "onnxruntime is not installed")
        # ... and auto takes torch and says why.
        fallback = change("backend", "auto", LocalizationStatus.STATE_NO_IMAGE)
        assert fallback.backend.startswith("torch (auto: onnxruntime unavailable"), fallback.backend
        assert "not installed" in fallback.backend
        if not torch.cuda.is_available():  # device cuda without a GPU: a clear NO_MODEL, the node stays up
            change("device", "cuda", LocalizationStatus.STATE_NO_MODEL, "'cuda' requested but")
            assert change("device", "cpu", LocalizationStatus.STATE_NO_IMAGE).device == "cpu"
    finally:
        harness.helper.destroy_subscription(sub)
        harness.executor.remove_node(node)
        node.destroy_node()
