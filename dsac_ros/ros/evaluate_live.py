"""``dsac-ros evaluate-live BAG --map MAP.pt [--report DIR] [--rate R]``: the node, measured on a bag.

Runs the localizer node and a ``BagPlayer`` in one process (one rclpy context, one executor), plays
the bag through the node over DDS with ``use_sim_time`` (/clock from the player), records every
``~/status`` and ``~/pose`` the node publishes, matches them by stamp to the bag's ground truth
(the pose topic, else /tf, exactly as ``dsac-ros evaluate`` reads it) and writes the report of
``dsac_ros.evaluation.write_report`` plus, in metrics.json:
    frames_sent            image messages played
    frames_dropped         images for which the node published no status (it was busy: newest wins)
    node_frames_dropped    the node's own count of replaced frames
    median/p95/mean_ms_latency   wall time from publishing an image to receiving its status
and the covariance consistency of the published ``~/pose_with_covariance`` (as offline).

Modes:
    lockstep (default)  each image waits for its status before the bag goes on: nothing is
                        dropped, and the node sees exactly the frames offline evaluation sees.
    real time (--rate R) the bag plays at R times its recorded speed; frames the node cannot keep
                        up with are dropped (counted as failures in the metrics and listed).

Same frames give the same poses as ``dsac-ros evaluate DATA --map MAP --seed-from-stamp``: the node
seeds RANSAC from the image stamp, and both apply the node's acceptance gate (``dsac_ros.gate``)
with the same parameters, so a frame counts as published exactly when offline evaluation's does.
``--param NAME=VALUE`` sets any node parameter (give ``dsac-ros evaluate`` the same
``--min-inliers`` / ``--min-inlier-ratio``).
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from dsac_ros.data.rosbag import COMPRESSED_TYPE, IMAGE_TYPE, BagTopics
from dsac_ros.status import Status

DEFAULT_FRAME_TIMEOUT_S = 60.0
MATCH_TIMEOUT_S = 10.0  # discovery of the in-process publishers and subscriptions
NAMESPACE = "/evaluate_live"


class LiveEvaluationError(RuntimeError):
    """The live run could not start (node topics never matched, bag without the image topic, ...)."""


def header_stamp_ns(cdr: bytes) -> int:
    """Stamp of a serialised message that starts with std_msgs/Header (Image, CompressedImage, ...).

    CDR: a 4-byte encapsulation header (byte 1: 0 big endian, 1 little endian), then Header.stamp
    as int32 sec, uint32 nanosec.
    """
    if len(cdr) < 12:
        raise ValueError(f"message of {len(cdr)} bytes is too short for a header")
    order = "<" if cdr[1] & 1 else ">"
    sec, nanosec = struct.unpack(order + "iI", cdr[4:12])
    return sec * 1_000_000_000 + nanosec


@dataclass
class LiveRun:
    """The outcome of one live run: FrameRecords in bag order and the live-only numbers."""

    records: list
    mode: str
    frames_sent: int
    frames_dropped: int
    node_frames_dropped: int
    node_frames_processed: int
    latencies_ms: list[float] = field(default_factory=list)
    device: str = ""
    no_model_reason: str = ""
    node_parameters: dict[str, Any] = field(default_factory=dict)

    def live_metrics(self) -> dict[str, Any]:
        latencies = np.asarray(self.latencies_ms, dtype=np.float64)
        has = len(latencies) > 0
        return {
            "frames_sent": self.frames_sent,
            "frames_dropped": self.frames_dropped,
            "node_frames_dropped": self.node_frames_dropped,
            "median_ms_latency": float(np.median(latencies)) if has else None,
            "p95_ms_latency": float(np.percentile(latencies, 95)) if has else None,
            "mean_ms_latency": float(latencies.mean()) if has else None,
        }


def _spin_until(executor, condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        executor.spin_once(timeout_sec=0.02)
    return True


def _typed_parameter_value(name: str, text: str):
    """A --param value converted to the type of the node parameter's default."""
    from dsac_ros.ros.params import SPECS

    if name == "use_sim_time":
        default: Any = True
    elif name in SPECS:
        default = SPECS[name].default
    else:
        raise ValueError(f"unknown node parameter {name!r}; known: {', '.join(sorted(SPECS))}")
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def parse_parameters(items) -> dict[str, Any]:
    """["name=value", ...] -> {name: typed value}; ValueError names the bad item."""
    values = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param takes NAME=VALUE, got {item!r}")
        try:
            values[name.strip()] = _typed_parameter_value(name.strip(), text.strip())
        except ValueError as error:
            raise ValueError(f"--param {item}: {error}") from None
    return values


def ground_truth(bag_path, image_topic: str, camera_info_topic: str, pose_topic: Optional[str],
                 tf_parent: str, tf_child: Optional[str]) -> list[tuple[int, Optional[np.ndarray], str]]:
    """(stamp_ns, world_T_cam or None, name) of every image of the bag, read as offline evaluation does."""
    from dsac_ros.data.rosbag import BagReader

    with BagReader(bag_path, image_topic=image_topic, camera_info_topic=camera_info_topic, depth_topic=None,
                   pose_topic=pose_topic, tf_parent=tf_parent, tf_child=tf_child) as reader:
        return [(frame.stamp_ns, frame.world_T_cam, frame.name) for frame in reader]


class LiveEvaluator:
    """The localizer node and a bag player in ``context`` (an initialised rclpy Context).

    rate: None for lockstep, else the real-time playback factor. node_parameters override the
    defaults this class sets (see the module docstring). ``run()`` plays the bag once.
    """

    def __init__(self, context, bag_path, map_path, *, rate: Optional[float] = None, device: str = "auto",
                 topics: Optional[list[str]] = None, image_topic: str = BagTopics.image,
                 camera_info_topic: str = BagTopics.camera_info, depth_topic: str = BagTopics.depth,
                 use_depth: bool = False, node_parameters: Optional[dict[str, Any]] = None,
                 frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S, localizer_factory=None,
                 progress: Optional[Callable[[Any], None]] = None) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from dsac_ros.msg import LocalizationStatus
        from dsac_ros.ros.node import LocalizerNode, default_localizer_factory
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped

        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.context = context
        self.rate = rate
        self.image_topic = image_topic
        self.camera_info_topic = camera_info_topic
        self.frame_timeout_s = float(frame_timeout_s)
        self.progress = progress
        self._state_ok = LocalizationStatus.STATE_OK
        self._state_no_image = LocalizationStatus.STATE_NO_IMAGE
        self._state_no_model = LocalizationStatus.STATE_NO_MODEL
        self.statuses: dict[int, Any] = {}
        self.poses: dict[int, Any] = {}
        self.covariances: dict[int, np.ndarray] = {}  # (6, 6) from ~/pose_with_covariance
        self.sent_s: dict[int, float] = {}
        self._processed_at_send: dict[int, int] = {}
        self.status_received_s: dict[int, float] = {}
        self.sent_order: list[int] = []

        self.helper = None
        self.node = None
        self.player = None
        self.executor = None
        try:
            self.helper = self._create_helper(context)
            self.player = self._create_player(bag_path, topics, use_depth, depth_topic)
            compressed = self.player.topics[image_topic] == COMPRESSED_TYPE
            remaps = [f"{'image/compressed' if compressed else 'image'}:={image_topic}",
                      f"camera_info:={camera_info_topic}"]
            if use_depth:
                remaps.append(f"depth:={depth_topic}")
            values: dict[str, Any] = {
                "map_path": str(map_path), "device": device, "use_sim_time": True, "tf_mode": "map_to_camera",
                "seed_from_stamp": True,
                "use_depth": bool(use_depth), "use_compressed": compressed}
            values.update(node_parameters or {})
            self.node_parameters = values
            cli_args = ["--ros-args"] + [arg for remap in remaps for arg in ("-r", remap)]
            self.node = LocalizerNode(
                context=context, namespace=NAMESPACE, cli_args=cli_args, use_global_arguments=False,
                parameter_overrides=[Parameter(name, value=value) for name, value in values.items()],
                localizer_factory=localizer_factory or default_localizer_factory)
            reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            base = f"{NAMESPACE}/localizer"
            # Pose before status: when both are ready, the executor takes the pose first.
            self.helper.create_subscription(PoseStamped, f"{base}/pose", self._on_pose, reliable)
            self.helper.create_subscription(PoseWithCovarianceStamped, f"{base}/pose_with_covariance",
                                            self._on_pose_covariance, reliable)
            self.helper.create_subscription(LocalizationStatus, f"{base}/status", self._on_status, reliable)
            self.executor = SingleThreadedExecutor(context=context)
            self.executor.add_node(self.helper)
            self.executor.add_node(self.node)
        except Exception:
            self.close()
            raise

    @staticmethod
    def _create_helper(context):
        import rclpy

        return rclpy.create_node("evaluate_live", namespace=NAMESPACE, context=context)

    def _create_player(self, bag_path, topics, use_depth: bool, depth_topic: str):
        from rosbags.rosbag2 import Reader

        from dsac_ros.ros.replay import TF_STATIC_TOPIC, TF_TOPIC, BagPlayer

        with Reader(Path(bag_path)) as reader:
            present = {topic: info.msgtype for topic, info in reader.topics.items()}
        if self.image_topic not in present:
            raise LiveEvaluationError(f"{bag_path}: no image topic {self.image_topic!r}; topics: "
                                      f"{', '.join(sorted(present)) or 'none'}")
        if present[self.image_topic] not in (IMAGE_TYPE, COMPRESSED_TYPE):
            raise LiveEvaluationError(f"{bag_path}: {self.image_topic} has type {present[self.image_topic]}, "
                                      f"expected {IMAGE_TYPE} or {COMPRESSED_TYPE}")
        if self.camera_info_topic not in present:
            raise LiveEvaluationError(f"{bag_path}: no CameraInfo topic {self.camera_info_topic!r} (the node needs it)")
        if topics is None:
            # What the node listens to; ground truth is read from the bag, not played.
            topics = [self.image_topic, self.camera_info_topic] + ([depth_topic] if use_depth else [])
            topics += [t for t in (TF_TOPIC, TF_STATIC_TOPIC) if t in present]
        else:
            topics = list(dict.fromkeys([self.image_topic, self.camera_info_topic] + list(topics)))
        return BagPlayer(self.helper, bag_path, topics=topics, rate=self.rate or 1.0, loop=False, clock=True,
                         skip_unavailable=False)

    # ------------------------------------------------------------------ callbacks

    def _on_pose(self, msg) -> None:
        from dsac_ros.ros.conversions import pose_to_matrix, stamp_to_ns

        try:
            self.poses[stamp_to_ns(msg.header.stamp)] = pose_to_matrix(msg.pose)
        except ValueError:
            pass  # the node never publishes an invalid pose; if it did, the frame counts as failed

    def _on_pose_covariance(self, msg) -> None:
        from dsac_ros.ros.conversions import stamp_to_ns

        self.covariances[stamp_to_ns(msg.header.stamp)] = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)

    def _on_status(self, msg) -> None:
        from dsac_ros.ros.conversions import stamp_to_ns

        stamp_ns = stamp_to_ns(msg.header.stamp)
        # A frame's status counts that frame in frames_processed. The node's idle timer also
        # publishes (NO_IMAGE, or NO_MODEL before the map is loaded) stamped "now", which under
        # /clock can equal an image stamp: those count nothing new and are not the frame's.
        if (msg.state == self._state_no_image or stamp_ns not in self._processed_at_send
                or msg.frames_processed <= self._processed_at_send[stamp_ns]):
            return
        self.statuses[stamp_ns] = msg
        self.status_received_s[stamp_ns] = time.monotonic()
        if self.progress is not None and stamp_ns in self.sent_s:
            self.progress(msg)

    # ------------------------------------------------------------------ running

    def _wait_for_connections(self) -> None:
        needed = [self.player.publishers[self.image_topic], self.player.publishers[self.camera_info_topic]]
        if not _spin_until(self.executor, lambda: all(p.get_subscription_count() > 0 for p in needed),
                           MATCH_TIMEOUT_S):
            raise LiveEvaluationError("the localizer node's image and camera_info subscriptions did not match the "
                                      f"player's publishers within {MATCH_TIMEOUT_S:g} s")
        base = f"{NAMESPACE}/localizer"
        _spin_until(self.executor, lambda: all(self.helper.count_publishers(f"{base}/{t}") > 0
                                               for t in ("pose", "status")), MATCH_TIMEOUT_S)

    def _prepare_node(self) -> None:
        """Wait for the node's map (its worker loads it at start) and deliver the bag's first
        CameraInfo before any image."""
        # The map first, before any /clock: the node's idle timer runs on sim time and would report
        # NO_MODEL while the map is still loading; and real-time playback should not begin with
        # frames queued behind the load.
        _spin_until(self.executor, lambda: self.node.model_loaded or not self.node.model_loading, MATCH_TIMEOUT_S)
        # Published back to back, the first image could reach the worker before its CameraInfo
        # (BAD_INPUT). Best effort: resend until the node has it.
        first = next((m for m in self.player.messages() if m.topic == self.camera_info_topic), None)
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while first is not None and not self.node.has_camera_info and time.monotonic() < deadline:
            self.player.publish(first)
            _spin_until(self.executor, lambda: self.node.has_camera_info, 0.2)

    def _image_sent(self, message) -> int:
        stamp_ns = header_stamp_ns(message.data)
        self._processed_at_send[stamp_ns] = int(self.node.frames_processed)
        self.sent_s[stamp_ns] = time.monotonic()
        self.sent_order.append(stamp_ns)
        return stamp_ns

    def _run_lockstep(self) -> None:
        # An image's status is awaited just before the next image, so the messages recorded after
        # it (its depth image, TF) reach the node first.
        pending: Optional[int] = None
        for message in self.player.messages():
            if message.topic == self.image_topic:
                self._await_status(pending)
                pending = self._image_sent(message)
            self.player.publish(message)
        self._await_status(pending)

    def _await_status(self, stamp_ns: Optional[int]) -> None:
        """Spin until the frame's status (and its pose when OK) arrived; no status within the
        timeout: the frame counts as dropped."""
        if stamp_ns is None:
            return
        _spin_until(self.executor, lambda: stamp_ns in self.statuses, self.frame_timeout_s)
        if stamp_ns in self.statuses and self.statuses[stamp_ns].state == self._state_ok:
            _spin_until(self.executor, lambda: stamp_ns in self.poses and stamp_ns in self.covariances,
                        MATCH_TIMEOUT_S)

    def _run_real_time(self) -> None:
        stop = threading.Event()
        failure: list[BaseException] = []

        def before_publish(message) -> None:
            if message.topic == self.image_topic:
                self._image_sent(message)

        def play() -> None:
            try:
                self.player.play(stop=stop, before_publish=before_publish)
            except BaseException as error:  # surfaced in the main thread
                failure.append(error)

        thread = threading.Thread(target=play, name="evaluate_live_player", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                self.executor.spin_once(timeout_sec=0.02)
        finally:
            stop.set()
            thread.join()
        if failure:
            raise failure[0]
        if self.sent_order:
            # The newest image is never replaced, so its status always comes; earlier ones are in by then.
            last = self.sent_order[-1]
            _spin_until(self.executor, lambda: last in self.statuses, self.frame_timeout_s)
        _spin_until(self.executor, lambda: all(s in self.poses and s in self.covariances
                                               for s, m in self.statuses.items()
                                               if m.state == self._state_ok and s in self.sent_s), 1.0)

    def run(self, truth: list[tuple[int, Optional[np.ndarray], str]]) -> LiveRun:
        """Play the bag once; ``truth`` is ``ground_truth(...)`` of the same bag (records follow it)."""
        from dsac_ros.evaluation import FrameRecord
        from dsac_ros.ros.conversions import STATUS_OF_STATE

        self._wait_for_connections()
        self._prepare_node()
        if self.rate is None:
            self._run_lockstep()
        else:
            self._run_real_time()
        records = []
        latencies = []
        device = ""
        no_model = ""
        for stamp_ns, world_T_cam_gt, name in truth:
            status = self.statuses.get(stamp_ns)
            if status is None:
                records.append(FrameRecord(stamp_ns, None, world_T_cam_gt, {}, name, status=Status.DROPPED,
                                           reason="the node published no status for this frame"))
                continue
            if stamp_ns in self.sent_s and stamp_ns in self.status_received_s:
                latencies.append(max(0.0, (self.status_received_s[stamp_ns] - self.sent_s[stamp_ns]) * 1e3))
            estimate, reason = None, status.reason
            if status.state == self._state_ok:
                estimate = self.poses.get(stamp_ns)
                if estimate is None:
                    reason = "status OK but the pose message was not received"
            elif status.state == self._state_no_model:
                no_model = status.reason
            device = status.device or device
            timings = {"network": float(status.network_ms), "ransac": float(status.ransac_ms),
                       "total": float(status.total_ms)}
            state_name = Status.LOST if status.state == self._state_ok and estimate is None else \
                STATUS_OF_STATE[status.state]
            records.append(FrameRecord(stamp_ns, estimate, world_T_cam_gt, timings, name, status=state_name,
                                       reason=reason, inlier_count=int(status.inlier_count),
                                       inlier_ratio=float(status.inlier_ratio), score=float(status.score),
                                       covariance_6x6=self.covariances.get(stamp_ns) if estimate is not None
                                       else None))
        truth_stamps = {stamp for stamp, _, _ in truth}
        dropped = sum(1 for record in records if record.status == Status.DROPPED)
        return LiveRun(records=records, mode="lockstep" if self.rate is None else "real time",
                       frames_sent=len({s for s in self.sent_order if s in truth_stamps}), frames_dropped=dropped,
                       node_frames_dropped=int(self.node.frames_dropped),
                       node_frames_processed=int(self.node.frames_processed), latencies_ms=latencies,
                       device=device, no_model_reason=no_model, node_parameters=dict(self.node_parameters))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)
            self.executor = None
        if self.player is not None:
            self.player.close()
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
        if self.helper is not None:
            self.helper.destroy_node()
            self.helper = None


def evaluate_bag_live(bag_path, map_path, *, rate: Optional[float] = None, device: str = "auto",
                      topics: Optional[list[str]] = None, image_topic: str = BagTopics.image,
                      camera_info_topic: str = BagTopics.camera_info, depth_topic: str = BagTopics.depth,
                      pose_topic: Optional[str] = BagTopics.pose, tf_parent: str = BagTopics.map_frame,
                      tf_child: Optional[str] = None, use_depth: bool = False,
                      node_parameters: Optional[dict[str, Any]] = None,
                      frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S, domain_id: Optional[int] = None,
                      progress: Optional[Callable[[Any], None]] = None) -> LiveRun:
    """One live run in a private rclpy context (initialised and shut down here)."""
    import rclpy

    truth = ground_truth(bag_path, image_topic, camera_info_topic, pose_topic, tf_parent, tf_child)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    evaluator = None
    try:
        evaluator = LiveEvaluator(context, bag_path, map_path, rate=rate, device=device, topics=topics,
                                  image_topic=image_topic, camera_info_topic=camera_info_topic,
                                  depth_topic=depth_topic, use_depth=use_depth, node_parameters=node_parameters,
                                  frame_timeout_s=frame_timeout_s, progress=progress)
        return evaluator.run(truth)
    finally:
        if evaluator is not None:
            evaluator.close()
        rclpy.try_shutdown(context=context)
