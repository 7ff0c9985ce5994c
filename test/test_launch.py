"""`ros2 launch dsac_ros localize.launch.py` as a user runs it: a real launch process, talked to over DDS.

The launch packages and the ros2 CLI come from a ROS 2 distribution, or from ../shared/ros2-launch/
(installed by `make setup`). Where neither is present the tests skip with the reason.
(launch_testing is not used: its pytest plugin breaks pytest 9, see shared/ros2-launch/README.md.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

ros2 = shutil.which("ros2")
if ros2 is None:
    pytest.skip("the `ros2` command is not installed (no ROS 2 distribution sourced, and make setup found no "
                "../shared/ros2-launch/)", allow_module_level=True)
pytest.importorskip("launch_ros", reason="ROS 2 `launch_ros` is not installed")

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402

from dsac_ros.data.images import encode_image  # noqa: E402
from dsac_ros.data.scenes import get_scene  # noqa: E402
from dsac_ros.dsac import RansacOptions  # noqa: E402
from dsac_ros.frame import stamp_seed  # noqa: E402
from dsac_ros.geometry import pose_errors  # noqa: E402
from dsac_ros.localizer import Localizer  # noqa: E402
from dsac_ros.msg import LocalizationStatus  # noqa: E402
from dsac_ros.ros.conversions import ns_to_stamp, pose_to_matrix, stamp_to_ns, transform_to_matrix  # noqa: E402
from dsac_ros.ros.node import sensor_qos  # noqa: E402
from fixtures_maps import FIT_STRIDE, tiny_map_path  # noqa: E402,F401 (fixture)
from ros_helpers import spin_until  # noqa: E402
from tolerances import check_below  # noqa: E402

pytestmark = pytest.mark.ros

S = 1_000_000_000
CAMERA_FRAME = "launch_camera_optical_frame"
START_S = 90.0  # torch and the map load in the launched process
PARAMS = """/**:
  ros__parameters:
    tf_mode: map_to_camera
    min_inliers: 20
    transform_tolerance: 0.0
"""


class LaunchProcess:
    """`ros2 launch ...` in its own process group; its output is collected by a reader thread."""

    def __init__(self, *arguments: str) -> None:
        self.command = [ros2, "launch", "dsac_ros", "localize.launch.py", *arguments]
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=dict(os.environ), start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def interrupt(self, timeout_s: float = 60.0) -> int:
        """SIGINT to the launch's process group, as Ctrl-C in a terminal does (ros2 launch and its
        node both get it); -> the exit code. ros2 launch escalates to SIGTERM and SIGKILL after 5 s
        each, so a minute is ample; past it the test fails with what the launch printed."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            self._reader.join(timeout=5.0)
            tail = "".join(self.lines[-60:])
            raise AssertionError(f"ros2 launch did not exit within {timeout_s:g} s of SIGINT; its output:\n{tail}")
        self._reader.join(timeout=5.0)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Client:
    """The test's own rclpy node: publishes frames and CameraInfo, keeps what the localizer publishes."""

    def __init__(self, namespace: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("launch_test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        prefix = f"/{namespace}/localizer"
        self.statuses: list[LocalizationStatus] = []
        self.poses: list[PoseStamped] = []
        self.transforms: list = []
        self.node.create_subscription(LocalizationStatus, f"{prefix}/status", self.statuses.append, reliable)
        self.node.create_subscription(PoseStamped, f"{prefix}/pose", self.poses.append, reliable)
        self.node.create_subscription(TFMessage, "/tf", lambda msg: self.transforms.extend(msg.transforms), reliable)
        self.image_pub = self.node.create_publisher(Image, f"/{namespace}/camera/image", sensor_qos())
        self.info_pub = self.node.create_publisher(CameraInfo, f"/{namespace}/camera/info", sensor_qos())

    def spin_until(self, condition, timeout_s: float) -> bool:
        return spin_until(self.executor, condition, timeout_s)

    def status_for(self, stamp_ns: int):
        """The newest status for this stamp (a resent frame can be BAD_INPUT first, before its CameraInfo)."""
        return next((s for s in reversed(self.statuses) if stamp_to_ns(s.header.stamp) == stamp_ns), None)

    def localise(self, frame, stamp_ns: int, timeout_s: float = START_S) -> LocalizationStatus:
        """Publish CameraInfo and the frame (best effort: again every half second) until its status arrives."""
        info = CameraInfo(width=frame.intrinsics.width_px, height=frame.intrinsics.height_px,
                          distortion_model="plumb_bob")
        info.header.frame_id = CAMERA_FRAME
        info.k = [float(v) for v in frame.intrinsics.K.reshape(9)]
        info.d = [0.0] * 5
        step, data = encode_image(frame.image_rgb, "rgb8")
        image = Image(encoding="rgb8", height=frame.image_rgb.shape[0], width=frame.image_rgb.shape[1], step=step)
        image.header.stamp, image.header.frame_id = ns_to_stamp(stamp_ns), CAMERA_FRAME
        image.data = data
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info.header.stamp = image.header.stamp
            self.info_pub.publish(info)
            self.spin_until(lambda: False, 0.1)  # CameraInfo first: an image without one is BAD_INPUT
            self.image_pub.publish(image)
            status = self.status_for(stamp_ns)
            if status is not None and status.state != LocalizationStatus.STATE_BAD_INPUT:
                return status
            if self.spin_until(lambda: self.status_for(stamp_ns) is not None
                               and self.status_for(stamp_ns).state != LocalizationStatus.STATE_BAD_INPUT, 0.5):
                return self.status_for(stamp_ns)
        raise AssertionError(f"no status for stamp {stamp_ns} within {timeout_s} s; statuses: "
                             f"{[(stamp_to_ns(s.header.stamp), s.state_name, s.reason) for s in self.statuses[-3:]]}")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def ros2_cli(*arguments: str, attempts: int = 3,
             until=lambda result: result.returncode == 0) -> subprocess.CompletedProcess:
    """A `ros2` CLI call as a user types it; retried (until ``until(result)``) because a fresh CLI
    process discovers the graph anew each time, which can take longer than its own wait."""
    result = None
    for _ in range(attempts):
        result = subprocess.run([ros2, *arguments], capture_output=True, text=True, timeout=60, env=dict(os.environ))
        if until(result):
            return result
    return result


def offline_result(localizer, frame, stamp_ns: int, hypotheses: int):
    """What the node computes for this frame: the same map, seeded from the stamp."""
    return localizer.localize(frame.image_rgb, frame.intrinsics, ransac=RansacOptions(hypotheses=hypotheses),
                              seed=stamp_seed(stamp_ns))


@contextlib.contextmanager
def launched(namespace: str, *arguments: str):
    """``ros2 launch`` in ``namespace`` (device cpu) and a client node; on leaving, Ctrl-C and a clean
    exit: code 0 and no traceback in the launch's output."""
    launch = LaunchProcess(*arguments, f"namespace:={namespace}", "device:=cpu")
    client = Client(namespace)
    try:
        yield launch, client
    finally:
        client.close()
        code = launch.interrupt()
    assert code == 0, launch.output
    assert "Traceback" not in launch.output, launch.output


@pytest.fixture
def namespace(request) -> str:
    return f"launch_{os.getpid()}_{request.node.name.split('[')[0][-12:]}"


def test_launch_file_localises_takes_a_parameter_change_and_exits_cleanly(tiny_map_path, namespace, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    frames = list(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE))
    offline = Localizer(tiny_map_path, device="cpu")
    with launched(namespace, f"map:={tiny_map_path}", f"params_file:={params}", "image:=camera/image",
                  "camera_info:=camera/info") as (launch, client):
        stamp_ns = 1_700_000_000 * S
        status = client.localise(frames[0], stamp_ns)
        expected = offline_result(offline, frames[0], stamp_ns, hypotheses=64)
        assert status.state == LocalizationStatus.STATE_OK, (status.state_name, status.reason, launch.output)
        assert status.hypotheses_requested == 64 and status.inlier_count == expected.inlier_count
        assert client.spin_until(lambda: any(stamp_to_ns(p.header.stamp) == stamp_ns for p in client.poses), 10.0)
        pose = next(p for p in client.poses if stamp_to_ns(p.header.stamp) == stamp_ns)
        map_T_cam = pose_to_matrix(pose.pose)
        # The launched node runs the same code with the same seed as the offline localizer: the
        # same pose to the float64 -> message round trip (quaternions ~1e-9), far inside 1e-5 m.
        check_below("launched vs offline translation_m", pose_errors(map_T_cam, expected.world_T_cam)[0], 1e-5)
        check_below("launched vs offline rotation_deg", pose_errors(map_T_cam, expected.world_T_cam)[1], 1e-3)
        translation_m, rotation_deg = pose_errors(map_T_cam, frames[0].world_T_cam)
        assert translation_m < 0.05 and rotation_deg < 5.0  # a frame the map was fitted on
        assert client.spin_until(lambda: any(
            t.header.frame_id == "map" and t.child_frame_id == CAMERA_FRAME
            and stamp_to_ns(t.header.stamp) == stamp_ns for t in client.transforms), 10.0)
        tf = next(t for t in client.transforms if t.child_frame_id == CAMERA_FRAME
                  and stamp_to_ns(t.header.stamp) == stamp_ns)
        check_below("TF vs pose translation_m", pose_errors(transform_to_matrix(tf.transform), map_T_cam)[0], 1e-6)

        # A user changes the hypothesis count with the CLI; the next frame's status shows it.
        node_name = f"/{namespace}/localizer"
        result = ros2_cli("param", "set", "--no-daemon", "--spin-time", "5", node_name, "ransac.hypotheses", "16",
                          attempts=5)
        assert result.returncode == 0 and "Set parameter successful" in result.stdout, (result.stdout, result.stderr)
        result = ros2_cli("param", "get", "--no-daemon", "--spin-time", "5", node_name, "ransac.hypotheses",
                          attempts=5)
        assert result.returncode == 0 and "16" in result.stdout, (result.stdout, result.stderr)
        stamp_ns += S
        status = client.localise(frames[1], stamp_ns, timeout_s=30.0)
        expected = offline_result(offline, frames[1], stamp_ns, hypotheses=16)
        assert status.hypotheses_requested == 16 and status.inlier_count == expected.inlier_count
        # An out-of-range value is refused with the descriptor's reason and changes nothing.
        result = ros2_cli("param", "set", "--no-daemon", "--spin-time", "5", node_name, "ransac.hypotheses", "0",
                          attempts=5, until=lambda result: "Setting parameter failed" in result.stderr)
        assert "Setting parameter failed" in result.stderr and "out of range" in result.stderr, (result.stdout,
                                                                                                result.stderr)

        # The topics a user looks for, through the CLI.
        # Each CLI process discovers the graph anew; on a loaded machine 2 s was not always enough.
        result = ros2_cli("topic", "list", "--no-daemon", "--spin-time", "5", attempts=5,
                          until=lambda result: f"{node_name}/status" in result.stdout)
        assert f"{node_name}/pose" in result.stdout and f"{node_name}/status" in result.stdout, result.stdout
    output = launch.output
    # A clean start: the load is announced at INFO, never reported as a NO_MODEL error.
    assert f"loading map {tiny_map_path}" in output and f"map {tiny_map_path} loaded" in output, output
    assert "NO_MODEL" not in output, output


def test_a_wrong_map_path_leaves_the_node_up_with_no_model_and_the_reason(namespace, tmp_path):
    missing = tmp_path / "no_such_map.pt"
    with launched(namespace, f"map:={missing}") as (launch, client):
        assert client.spin_until(lambda: any(s.state == LocalizationStatus.STATE_NO_MODEL and "cannot load map" in s.reason
                                             for s in client.statuses), START_S), launch.output
        status = next(s for s in client.statuses if "cannot load map" in s.reason)
        assert str(missing) in status.reason and status.map_path == str(missing)
        time.sleep(1.0)
        assert launch.process.poll() is None, launch.output  # neither the node nor the launch died
        # Still answering: the status keeps coming.
        count = len(client.statuses)
        assert client.spin_until(lambda: len(client.statuses) > count, 10.0)
    assert "NO_MODEL: cannot load map" in launch.output, launch.output


def test_lifecycle_launch_configures_activates_and_obeys_the_lifecycle_services(tiny_map_path, namespace, tmp_path):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    frame = list(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE))[1]
    with launched(namespace, f"map:={tiny_map_path}", f"params_file:={params}", "image:=camera/image",
                  "camera_info:=camera/info", "lifecycle:=true") as (launch, client):
        node_name = f"/{namespace}/localizer"
        get_state = client.node.create_client(GetState, f"{node_name}/get_state")
        change_state = client.node.create_client(ChangeState, f"{node_name}/change_state")

        def call(client_, request):
            assert client.spin_until(client_.service_is_ready, START_S), launch.output
            future = client_.call_async(request)
            assert client.spin_until(future.done, 30.0), launch.output
            return future.result()

        # autostart: the launch configures (the map loads) and then activates the node.
        deadline = time.monotonic() + START_S
        while call(get_state, GetState.Request()).current_state.id != State.PRIMARY_STATE_ACTIVE:
            assert time.monotonic() < deadline, launch.output
            client.spin_until(lambda: False, 0.5)
        status = client.localise(frame, 1_700_000_000 * S)
        assert status.state == LocalizationStatus.STATE_OK, (status.state_name, status.reason, launch.output)
        # deactivate, as `ros2 lifecycle set NODE deactivate` or nav2's lifecycle manager does it.
        assert call(change_state, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE))).success
        assert call(get_state, GetState.Request()).current_state.id == State.PRIMARY_STATE_INACTIVE
        assert client.spin_until(lambda: client.image_pub.get_subscription_count() == 0, 30.0)
    assert "activating" in launch.output and f"map {tiny_map_path} loaded" in launch.output, launch.output


def test_launch_arguments_are_listed(tmp_path):
    result = subprocess.run([ros2, "launch", "dsac_ros", "localize.launch.py", "--show-args"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for argument in ("map", "params_file", "namespace", "use_sim_time", "image", "camera_info", "depth", "device",
                     "lifecycle", "autostart"):
        assert f"'{argument}'" in result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
