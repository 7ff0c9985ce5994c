"""The lifecycle localizer over real DDS, driven through its lifecycle services as nav2's lifecycle
manager and `ros2 lifecycle set` drive it (lifecycle_msgs/srv/ChangeState and GetState).

Absence is checked against a clock the node itself keeps: the 1 Hz /diagnostics it publishes in
every configured state. Two diagnostics after a transition, nothing else may have arrived.
"""

from __future__ import annotations

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import State as StateMsg
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from dsac_ros.data.images import encode_image
from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import pose_errors
from dsac_ros.msg import LocalizationStatus
from dsac_ros.ros.conversions import ns_to_stamp, pose_to_matrix, stamp_to_ns
from dsac_ros.ros.lifecycle_node import LifecycleLocalizerNode
from dsac_ros.ros.node import sensor_qos
from fixtures_maps import FIT_STRIDE, tiny_map_path  # noqa: F401 (fixture)
from ros_helpers import spin_until

pytestmark = pytest.mark.ros

S = 1_000_000_000
NS = "/lifecycle"
WAIT_S = 30.0


class Manager:
    """A helper node: lifecycle service clients, the inputs, and everything the localizer sends."""

    def __init__(self, context, map_path) -> None:
        self.node_under_test = LifecycleLocalizerNode(context=context, namespace=NS, parameter_overrides=[
            Parameter("map_path", value=str(map_path)), Parameter("device", value="cpu"),
            Parameter("min_inliers", value=20), Parameter("tf_mode", value="map_to_camera"),
            Parameter("transform_tolerance", value=0.0)])
        self.helper = rclpy.create_node("lifecycle_test_manager", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node_under_test)
        self.executor.add_node(self.helper)
        self.change_state = self.helper.create_client(ChangeState, f"{NS}/localizer/change_state")
        self.get_state = self.helper.create_client(GetState, f"{NS}/localizer/get_state")
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.statuses, self.poses, self.transforms, self.diagnostics = [], [], [], []
        self.helper.create_subscription(LocalizationStatus, f"{NS}/localizer/status", self.statuses.append, reliable)
        self.helper.create_subscription(PoseStamped, f"{NS}/localizer/pose", self.poses.append, reliable)
        self.helper.create_subscription(TFMessage, "/tf", lambda m: self.transforms.extend(m.transforms), reliable)
        self.helper.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diagnostics.extend(
            s for s in m.status if s.name.startswith(f"{NS}/localizer")), reliable)
        self.image_pub = self.helper.create_publisher(Image, f"{NS}/image", sensor_qos())
        self.info_pub = self.helper.create_publisher(CameraInfo, f"{NS}/camera_info", sensor_qos())
        assert self.spin_until(lambda: self.change_state.service_is_ready() and self.get_state.service_is_ready())

    def spin_until(self, condition, timeout_s=WAIT_S) -> bool:
        return spin_until(self.executor, condition, timeout_s)

    def transition(self, transition_id: int) -> bool:
        future = self.change_state.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert self.spin_until(future.done), "no answer from change_state"
        return future.result().success

    def state(self) -> int:
        future = self.get_state.call_async(GetState.Request())
        assert self.spin_until(future.done), "no answer from get_state"
        return future.result().current_state.id

    def wait_two_diagnostics(self) -> None:
        """Two diagnostics from now: at least a second of the node's own timer."""
        start = len(self.diagnostics)
        assert self.spin_until(lambda: len(self.diagnostics) >= start + 2), "no diagnostics"

    def send_frame(self, frame, stamp_ns) -> None:
        info = CameraInfo(width=frame.intrinsics.width_px, height=frame.intrinsics.height_px,
                          distortion_model="plumb_bob")
        info.k = [float(v) for v in frame.intrinsics.K.reshape(9)]
        info.d = [0.0] * 5
        step, data = encode_image(frame.image_rgb, "rgb8")
        image = Image(encoding="rgb8", height=frame.image_rgb.shape[0], width=frame.image_rgb.shape[1], step=step)
        image.header.stamp, image.header.frame_id = ns_to_stamp(stamp_ns), "camera_optical"
        image.data = data
        node = self.node_under_test
        assert self.spin_until(lambda: node.has_camera_info or self.info_pub.publish(info))
        received = node.frames_received
        assert self.spin_until(lambda: node.frames_received > received or self.image_pub.publish(image), 10.0)


@pytest.fixture(scope="module")
def manager(tiny_map_path):
    context = rclpy.Context()
    rclpy.init(context=context)
    manager = Manager(context, tiny_map_path)
    yield manager
    manager.executor.shutdown()
    manager.node_under_test.destroy_node()
    manager.helper.destroy_node()
    rclpy.shutdown(context=context)


def test_lifecycle_transitions_load_publish_and_stop_as_specified(manager, tiny_map_path):
    node = manager.node_under_test
    frames = list(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE))
    assert manager.state() == StateMsg.PRIMARY_STATE_UNCONFIGURED
    assert not node.model_loaded and manager.image_pub.get_subscription_count() == 0

    # A map that cannot load fails configure with the reason, and the node stays unconfigured.
    node.set_parameters([Parameter("map_path", value="/nonexistent/map.pt")])
    assert not manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == StateMsg.PRIMARY_STATE_UNCONFIGURED
    assert "/nonexistent/map.pt" in node.model_error
    node.set_parameters([Parameter("map_path", value=str(tiny_map_path))])

    # configure: the map is loaded, diagnostics run, but nothing is subscribed or published.
    assert manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == StateMsg.PRIMARY_STATE_INACTIVE and node.model_loaded
    manager.wait_two_diagnostics()
    assert manager.image_pub.get_subscription_count() == 0
    assert not manager.statuses and not manager.poses

    # activate: frames localise; pose, status and TF come out.
    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    assert manager.state() == StateMsg.PRIMARY_STATE_ACTIVE
    assert manager.spin_until(lambda: manager.image_pub.get_subscription_count() > 0
                              and manager.info_pub.get_subscription_count() > 0)
    stamp = 100 * S
    manager.send_frame(frames[1], stamp)
    assert manager.spin_until(lambda: any(stamp_to_ns(p.header.stamp) == stamp for p in manager.poses))
    pose = next(p for p in manager.poses if stamp_to_ns(p.header.stamp) == stamp)
    translation_m, rotation_deg = pose_errors(pose_to_matrix(pose.pose), frames[1].world_T_cam)
    assert translation_m < 0.1 and rotation_deg < 2.0
    assert manager.spin_until(lambda: any(t.child_frame_id == "camera_optical" for t in manager.transforms))

    # deactivate: unsubscribed, and TF is no longer republished.
    assert manager.transition(Transition.TRANSITION_DEACTIVATE)
    assert manager.state() == StateMsg.PRIMARY_STATE_INACTIVE
    assert manager.spin_until(lambda: manager.image_pub.get_subscription_count() == 0)
    manager.wait_two_diagnostics()  # anything in flight before the transition has arrived
    transforms, statuses, poses = len(manager.transforms), len(manager.statuses), len(manager.poses)
    manager.wait_two_diagnostics()
    assert (len(manager.transforms), len(manager.statuses), len(manager.poses)) == (transforms, statuses, poses)

    # Activated again: the pose from before is forgotten (no stale TF) until a frame localises.
    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    manager.wait_two_diagnostics()
    assert len(manager.transforms) == transforms
    stamp = 101 * S
    manager.send_frame(frames[2], stamp)
    assert manager.spin_until(lambda: any(stamp_to_ns(p.header.stamp) == stamp for p in manager.poses))
    assert manager.spin_until(lambda: len(manager.transforms) > transforms)

    # deactivate + cleanup: the map and the worker are released.
    assert manager.transition(Transition.TRANSITION_DEACTIVATE)
    assert manager.transition(Transition.TRANSITION_CLEANUP)
    assert manager.state() == StateMsg.PRIMARY_STATE_UNCONFIGURED
    assert not node.model_loaded and node._worker is None

    # And configure / activate / shutdown from active work again after a cleanup.
    assert manager.transition(Transition.TRANSITION_CONFIGURE) and node.model_loaded
    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    stamp = 102 * S
    manager.send_frame(frames[3], stamp)
    assert manager.spin_until(lambda: any(stamp_to_ns(s.header.stamp) == stamp for s in manager.statuses))
    assert manager.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert manager.state() == StateMsg.PRIMARY_STATE_FINALIZED
    assert not node.model_loaded and manager.image_pub.get_subscription_count() == 0
