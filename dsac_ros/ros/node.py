"""The `localizer` node: images in; pose, covariance, TF, status and diagnostics out.

A thin adapter over ``dsac_ros.localizer.Localizer`` (ROS_CONVENTIONS.md):

- Inputs: ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage, with
  ``use_compressed``), ``camera_info``, optionally ``depth`` (``use_depth``), all with the
  sensor-data QoS at depth 1; ``initialpose`` (PoseWithCovarianceStamped); /tf and /tf_static.
  A frame takes the CameraInfo with its own stamp when one arrived, else the newest one.
- Threading: subscription callbacks only store the newest message; one worker thread decodes,
  localises and publishes. A frame that arrives while another is still waiting is replaced and
  counted in ``frames_dropped`` (newest wins, nothing queues, latency stays bounded).
- Outputs, all stamped with the image stamp: ``~/pose`` (PoseStamped), ``~/pose_with_covariance``
  (PoseWithCovarianceStamped), ``~/status`` (LocalizationStatus, every frame, failures included),
  ``/diagnostics`` (1 Hz) and TF per ``tf_mode``:
    map_to_odom    map_T_odom = map_T_base(t) * inverse(odom_T_base(t)), odom -> base from /tf at t
    map_to_base    map_T_base = map_T_cam * cam_T_base (base -> camera from /tf or /tf_static)
    map_to_camera  map_T_cam under `camera_frame` or the image's frame_id
  TF is stamped image stamp + ``transform_tolerance`` when a frame is localised, and republished
  at ``tf_publish_rate_hz`` stamped ROS time now + tolerance (as slam_toolbox and rtabmap do), so
  consumers never extrapolate into the future; a stamp is never sent twice (tf2 rejects repeats).
- Only frames with at least ``min_inliers`` inliers, an inlier ratio of at least
  ``min_inlier_ratio``, a valid pose and a finite covariance produce a pose; otherwise LOST.
- ``initialpose``: a prior for the pose of the TF child (base_frame, or the camera in
  map_to_camera mode) in map_frame. Until the first successful localisation (since start or
  the last reset) the node broadcasts TF from it, so the TF tree is connected; it does not
  constrain DSAC. Diagnostics report ``tf_source`` = initialpose / localisation.
- A backwards time jump (the ROS clock, or the image stamps: a bag loop) resets the state:
  dynamic TF, the last pose and TF, the prior. Static TF is kept (tf2 keeps it too).
- Lens distortion: images with nonzero plumb_bob / rational_polynomial / equidistant
  coefficients are undistorted with OpenCV to the same K (remap tables cached); other models
  with nonzero coefficients are refused with status BAD_INPUT.
- ``map_path`` / ``device`` changes reload the map in the worker; RANSAC parameters take effect
  on the next frame. Without a usable map the node stays up with status NO_MODEL. During a
  reload the old map is released first, the status says NO_MODEL "loading map ..." (at the
  start and from the 1 Hz timer, images or not), frames wait (newest wins), and a frame is only
  ever localised against a map that finished loading (the localizer is swapped in whole).
- ``LocalizerCore`` holds all of this; ``LocalizerNode`` sets it all up at construction, and
  ``dsac_ros.ros.lifecycle_node.LifecycleLocalizerNode`` (``localizer --lifecycle``) per
  lifecycle transition.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Optional

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from dsac_ros.frame import stamp_seed
from dsac_ros.gate import gate
from dsac_ros.msg import LocalizationStatus
from dsac_ros.status import Status
from dsac_ros.ros import params as node_params
from dsac_ros.camera import Undistorter
from dsac_ros.ros.conversions import (STATE_OF_STATUS, covariance_for_attached_frame, covariance_to_msg,
                                      matrix_to_pose, ns_to_stamp, pose_to_matrix, stamp_to_ns)
from dsac_ros.ros.frame_input import MAX_BUFFERED_CAMERA_INFO, MAX_BUFFERED_DEPTH, FrameFailure, FrameInputMixin, PendingFrame
from dsac_ros.ros.node_io import NodeIoMixin, sensor_qos
from dsac_ros.ros.status_output import STATE_NAMES, StatusOutputMixin
from dsac_ros.ros.tf_output import Broadcast, TfOutputMixin
from dsac_ros.ros.tf_buffer import TfBuffer, TfListener, TransformError

# A failed map load is retried this often (the file may still be being written).
MAP_RETRY_S = 10.0
TF_CACHE_TIME_S = 10.0


__all__ = ["LocalizerCore", "LocalizerNode", "default_localizer_factory", "main", "sensor_qos"]


def default_localizer_factory(settings: node_params.NodeSettings):
    """Build the core localizer for the current map_path / device (raises on a bad map)."""
    from dsac_ros.localizer import Localizer

    kwargs = {}
    if settings.input_height_px:
        kwargs["input_height_px"] = settings.input_height_px
    return Localizer(settings.map_path, device=settings.device, ransac=settings.ransac_options(),
                     backend=settings.backend, **kwargs)


class LocalizerCore(FrameInputMixin, StatusOutputMixin, TfOutputMixin, NodeIoMixin):
    """Everything of the localizer but its life cycle, mixed into an rclpy ``Node``
    (``LocalizerNode``: all of it at construction) or a ``LifecycleNode``
    (``dsac_ros.ros.lifecycle_node``: outputs and map at configure, inputs at activate)."""

    def _init_core(self, node_name: str, localizer_factory, load_at_start: bool) -> None:
        """Parameters and state; no publishers, subscriptions or threads yet."""
        node_params.declare_parameters(self)
        initial = [self.get_parameter(spec.name) for spec in node_params.PARAMETERS]
        check = node_params.validate(initial)
        if not check.successful:
            raise ValueError(f"invalid parameter: {check.reason}")
        self.add_on_set_parameters_callback(self._on_set_parameters)
        settings = node_params.NodeSettings.from_node(self)
        self._node_name = node_name
        self._localizer_factory = localizer_factory

        self._cond = threading.Condition()
        self._stop = False
        self._frame_lock = threading.Lock()  # held while the worker processes a frame
        self._worker: Optional[threading.Thread] = None
        self._pending: Optional[PendingFrame] = None
        self._camera_info: Optional[CameraInfo] = None  # the newest
        self._camera_infos_by_stamp: dict[int, CameraInfo] = {}  # the last few, for an exact stamp match
        self._camera_model_cache: tuple[Any, Any] = (None, None)  # (CameraInfo msg, CameraModel or error)
        self._depth_msgs: dict[int, Image] = {}
        self._newest_image_stamp_ns: Optional[int] = None
        self._last_image_received_ns: Optional[int] = None
        self.frames_received = 0
        self.frames_dropped = 0
        self.frames_processed = 0
        self.resets = 0
        self._reset_reason = ""

        self._localizer = None
        self._model_key: Optional[tuple] = None
        # Until the worker's first attempt: loading when a map is named (status NO_MODEL with this
        # reason, logged at INFO), an error only when none is named or the load fails.
        self._model_loading = bool(settings.map_path) and load_at_start
        self._model_error = (f"loading map {settings.map_path}" if self._model_loading else
                             "no map loaded yet" if load_at_start else "not configured (lifecycle state unconfigured)")
        self._model_attempt_s = -np.inf
        self._device_name = ""
        self._backend_name = ""
        self._undistorter = Undistorter()

        self._broadcast: Optional[Broadcast] = None
        self._last_tf_stamp_ns: Optional[int] = None
        self._has_localised = False
        self._prior: Optional[tuple[np.ndarray, int]] = None  # (map_T_child, stamp_ns)
        self._last_status: Optional[LocalizationStatus] = None
        self._tf_problem = ""
        self._state_lock = threading.Lock()

        self.tf_buffer = TfBuffer(cache_time_s=TF_CACHE_TIME_S)
        # Edges this node broadcasts are its output, never its input: reading them back would
        # re-parent frames in its own buffer (e.g. map -> camera over base -> camera).
        self._own_tf_edges: set[tuple[str, str]] = set()
        self._tf_listener: Optional[TfListener] = None
        self._image_sub = self._camera_info_sub = self._depth_sub = self._initialpose_sub = None
        self._pose_pub = self._pose_cov_pub = self._status_pub = self._diagnostics_pub = self._tf_pub = None
        self._tf_timer = self._status_timer = None
        self._input_topics: dict[str, str] = {}
        # A backwards jump of the ROS clock (sim time from a looping bag) resets the state.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_time_jump)

    def _forget_pose(self) -> None:
        """No TF, last pose or prior any more (a reset, a deactivation)."""
        with self._state_lock:
            self._broadcast = None
            self._last_tf_stamp_ns = None
            self._has_localised = False
            self._prior = None

    def _release_model(self, reason: str) -> None:
        self._localizer = None
        self._model_key = None
        self._model_loading = False
        self._model_error = reason
        self._device_name = ""
        self._backend_name = ""

    def _log_started(self, settings) -> None:
        self.get_logger().info(
            f"localizer up: image topic {self.image_topic}, camera_info {self.camera_info_topic}, "
            f"tf_mode {settings.tf_mode}, map {settings.map_path or '(none)'}")


    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, parameters):
        """Validation only (no side effects): the worker reads the values for each frame."""
        current = {spec.name: self.get_parameter(spec.name).value for spec in node_params.PARAMETERS}
        return node_params.validate(parameters, current)

    # ------------------------------------------------------------------ callbacks (keep short)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, msg, compressed: bool) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        newest = self._newest_image_stamp_ns
        if newest is not None and stamp_ns < newest:
            # Before the frame is queued, so the worker sees it with the reset state.
            self._reset(f"image stamp jumped backwards from {newest * 1e-9:.3f} s to {stamp_ns * 1e-9:.3f} s")
        with self._cond:
            if self._pending is not None:
                self.frames_dropped += 1
            self._pending = PendingFrame(msg, compressed, stamp_ns, self._now_ns())
            self._newest_image_stamp_ns = stamp_ns
            self._last_image_received_ns = self._pending.received_ns
            self.frames_received += 1
            self._cond.notify_all()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        # A frame uses the CameraInfo of its own stamp when one came (camera drivers stamp both
        # alike, as image_transport's CameraSubscriber pairs them), else the newest.
        self._camera_infos_by_stamp[stamp_to_ns(msg.header.stamp)] = msg
        while len(self._camera_infos_by_stamp) > MAX_BUFFERED_CAMERA_INFO:
            del self._camera_infos_by_stamp[next(iter(self._camera_infos_by_stamp))]
        self._camera_info = msg

    def _on_depth(self, msg: Image) -> None:
        with self._cond:
            self._depth_msgs[stamp_to_ns(msg.header.stamp)] = msg
            while len(self._depth_msgs) > MAX_BUFFERED_DEPTH:
                self._depth_msgs.pop(min(self._depth_msgs))
            self._cond.notify_all()

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        map_frame = self.get_parameter("map_frame").value.lstrip("/")
        frame = msg.header.frame_id.lstrip("/")
        if frame and frame != map_frame:
            self.get_logger().warning(f"ignoring initialpose in frame {frame!r}: expected {map_frame!r}")
            return
        try:
            map_T_child = pose_to_matrix(msg.pose.pose)
        except ValueError as error:
            self.get_logger().warning(f"ignoring initialpose: {error}")
            return
        with self._state_lock:
            self._prior = (map_T_child, stamp_to_ns(msg.header.stamp))
        self.get_logger().info("initialpose received: TF from it until the first localisation")
        self._apply_prior()

    def _on_time_jump(self, jump) -> None:
        # ROS_TIME_ACTIVATED (use_sim_time switched on) also jumps backwards: reset then too.
        if jump.delta.nanoseconds < 0:
            self._reset(f"ROS time jumped by {jump.delta.nanoseconds * 1e-9:.3f} s")

    def _reset(self, reason: str) -> None:
        """Forget time-dependent state (bag loop); static TF, the map and counters stay."""
        self.tf_buffer.clear(keep_static=True)
        with self._cond:
            self._depth_msgs.clear()
            self._camera_infos_by_stamp.clear()
            self._newest_image_stamp_ns = None
        self._forget_pose()
        with self._state_lock:
            self.resets += 1
            self._reset_reason = reason
        self.get_logger().warning(f"state reset: {reason}")

    # ------------------------------------------------------------------ TF output


    # ------------------------------------------------------------------ status and diagnostics


    # ------------------------------------------------------------------ worker

    def _run_worker(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._pending is not None, timeout=0.2)
                if self._stop:
                    return
                frame, self._pending = self._pending, None
            try:
                settings = node_params.NodeSettings.from_node(self)
                self._ensure_model(settings)
                if frame is not None:
                    with self._frame_lock:
                        self._process(frame, settings)
            except Exception as error:  # the worker must survive anything a frame can throw
                if self._stop or not rclpy.ok(context=self.context):
                    return
                self.get_logger().error(f"localizer worker: {type(error).__name__}: {error}",
                                        throttle_duration_sec=5.0)

    def _ensure_model(self, settings) -> None:
        key = (settings.map_path, settings.device, settings.backend, settings.input_height_px)
        if key == self._model_key and (self._localizer is not None
                                       or not time.monotonic() - self._model_attempt_s >= MAP_RETRY_S):
            return
        self._model_key = key
        self._model_attempt_s = time.monotonic()
        if not settings.map_path:
            self._model_loading = False
            self._model_error = "map_path is empty: no map to localise in"
            self._localizer = None
            self._model_attempt_s = np.inf  # nothing to retry until map_path changes
            self._log_no_model()
            return
        # The state says "loading" before the old map goes (the status timer reads it from another
        # thread), and the old map is released before the new one loads (one map in memory).
        self._model_error = f"loading map {settings.map_path}"
        self._model_loading = True
        if self._localizer is not None:
            self.get_logger().info(f"loading map {settings.map_path} on device {settings.device} "
                                   "(the previous map is released; frames wait)")
        self._localizer = None
        if self._status_pub is not None:
            # Frames that arrive meanwhile wait (newest wins); this status says why.
            self._status_pub.publish(self._make_status(LocalizationStatus.STATE_NO_MODEL, self._model_error,
                                                       self._now_ns(), settings))
        try:
            localizer = self._localizer_factory(settings)
        except Exception as error:  # MapFileError, DeviceError, OSError, ...: the node stays up
            self._model_error = f"cannot load map {settings.map_path!r}: {error}"
            self._model_loading = False
            self._log_no_model()
            return
        self._localizer = localizer
        self._model_loading = False
        self._device_name = str(getattr(localizer, "device", settings.device))
        runner = getattr(localizer, "encoder_runner", None)
        self._backend_name = runner.describe() if runner is not None else ""
        self._model_error = ""
        self.get_logger().info(f"map {settings.map_path} loaded on device {self._device_name}, "
                               f"encoder backend {self._backend_name or 'n/a'}")
        if runner is not None and runner.note:
            self.get_logger().warning(f"backend {settings.backend}: {runner.note}")

    def _log_no_model(self) -> None:
        # One call site, so one throttle for every path that reports NO_MODEL. A map still loading
        # is not an error: its start was logged at INFO.
        if not self._model_loading:
            self.get_logger().error(f"NO_MODEL: {self._model_error}", throttle_duration_sec=10.0)


    def _process(self, frame: PendingFrame, settings) -> None:
        started = time.perf_counter()
        status = self._make_status(LocalizationStatus.STATE_OK, "", frame.stamp_ns, settings)
        try:
            if self._localizer is None:
                raise FrameFailure(LocalizationStatus.STATE_NO_MODEL, self._model_error)
            image_rgb, intrinsics, depth_m = self._decode(frame, settings)
            seed = stamp_seed(frame.stamp_ns) if settings.seed_from_stamp else None
            options = settings.ransac_options(seed)
            status.hypotheses_requested = options.hypotheses
            # Options per call: the shared localizer (and its map) is never changed by a frame.
            result = self._localizer.localize(image_rgb, intrinsics, depth_m=depth_m, ransac=options,
                                              retrieve_frames=settings.retrieve_frames or None,
                                              covariance_floor=settings.covariance_floor,
                                              depth_alignment=settings.depth_alignment, subcell=settings.subcell)
            self._fill_result(status, result)
            self._accept(frame, result, settings)
        except FrameFailure as failure:
            status.state = failure.state
            status.state_name = STATE_NAMES[failure.state]
            status.reason = failure.reason
            if failure.state == LocalizationStatus.STATE_NO_MODEL:
                self._log_no_model()
            else:
                self.get_logger().warning(f"{status.state_name}: {failure.reason}", throttle_duration_sec=2.0)
        self.frames_processed += 1
        status.frames_processed = self.frames_processed
        status.frames_dropped = self.frames_dropped
        if not status.total_ms:
            status.total_ms = (time.perf_counter() - started) * 1e3
        status.latency_ms = (self._now_ns() - frame.stamp_ns) * 1e-6
        if status.state == LocalizationStatus.STATE_OK and self._tf_problem:
            status.reason = self._tf_problem
        self._status_pub.publish(status)
        self._last_status = status

    @staticmethod
    def _fill_result(status: LocalizationStatus, result) -> None:
        status.inlier_count = int(result.inlier_count)
        status.inlier_ratio = float(result.inlier_ratio)
        if result.inlier_ratio > 0:
            status.correspondences = int(round(result.inlier_count / result.inlier_ratio))
        correspondences = getattr(result, "correspondences", None)
        if correspondences is not None:
            status.correspondences = int(correspondences)
        status.score = float(result.score) if np.isfinite(result.score) else 0.0
        status.hypotheses_valid = int(result.hypotheses_valid)
        timings = result.timings_ms or {}
        status.network_ms = float(timings.get("network", 0.0))
        status.ransac_ms = float(timings.get("ransac", 0.0))
        status.total_ms = float(timings.get("total", 0.0))
        if getattr(result, "device", None):
            status.device = str(result.device)

    def _accept(self, frame: PendingFrame, result, settings) -> None:
        """Gate the estimate; publish pose, covariance and TF; raise FrameFailure otherwise."""
        status, reason = gate(result, settings)
        if status != Status.OK:
            raise FrameFailure(STATE_OF_STATUS[status], reason)
        map_T_cam, covariance = result.world_T_cam, result.covariance_6x6
        camera_frame = settings.camera_frame or frame.msg.header.frame_id.lstrip("/")
        stamp_ns = frame.stamp_ns
        needs_base = settings.pose_target == "base" or (settings.publish_tf and settings.tf_mode != "map_to_camera")
        cam_T_base = None
        base_problem = ""
        if needs_base:
            if not camera_frame:
                base_problem = "the image has no frame_id and camera_frame is empty"
            else:
                try:
                    cam_T_base = self.tf_buffer.lookup(camera_frame, settings.base_frame, stamp_ns)
                except TransformError as error:
                    base_problem = str(error)
        if settings.pose_target == "base":
            if cam_T_base is None:
                raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT,
                                   f"pose_target base needs TF {settings.base_frame} -> {camera_frame}: {base_problem}")
            pose, covariance = map_T_cam @ cam_T_base, covariance_for_attached_frame(covariance, map_T_cam, cam_T_base)
        else:
            pose = map_T_cam
        try:
            covariance_values = covariance_to_msg(covariance)
        except ValueError as error:
            raise FrameFailure(LocalizationStatus.STATE_LOST, f"pose covariance unusable: {error}") from None

        header_stamp = ns_to_stamp(stamp_ns)
        pose_msg = PoseStamped()
        pose_msg.header.stamp, pose_msg.header.frame_id = header_stamp, settings.map_frame
        pose_msg.pose = matrix_to_pose(pose)
        pose_cov_msg = PoseWithCovarianceStamped()
        pose_cov_msg.header = pose_msg.header
        pose_cov_msg.pose.pose = pose_msg.pose
        pose_cov_msg.pose.covariance = covariance_values
        self._pose_pub.publish(pose_msg)
        self._pose_cov_pub.publish(pose_cov_msg)
        self._update_tf(map_T_cam, cam_T_base, base_problem, camera_frame, stamp_ns, settings)


    # ------------------------------------------------------------------ shutdown

    @property
    def model_loaded(self) -> bool:
        """True once a map is loaded and frames can be localised."""
        return self._localizer is not None

    @property
    def model_error(self) -> str:
        """Why no map is loaded ("loading map ..." while loading); empty when loaded."""
        return self._model_error

    @property
    def model_loading(self) -> bool:
        """True while the map named by map_path is being loaded (before the worker's first attempt too)."""
        return self._model_loading

    @property
    def has_camera_info(self) -> bool:
        """True once a CameraInfo has arrived."""
        return self._camera_info is not None

    def destroy_node(self) -> None:
        if getattr(self, "_cond", None) is not None:  # None when the constructor failed early
            self._stop_worker()
        super().destroy_node()


class LocalizerNode(LocalizerCore, Node):
    """See the module docstring. ``localizer_factory(settings)`` builds the core localizer
    (tests and benchmarks may pass their own); extra keyword arguments go to ``rclpy.node.Node``."""

    def __init__(self, node_name: str = "localizer", *, localizer_factory=default_localizer_factory,
                 **node_kwargs) -> None:
        super().__init__(node_name, **node_kwargs)
        self._init_core(node_name, localizer_factory, load_at_start=True)
        settings = node_params.NodeSettings.from_node(self)
        self._create_outputs(self.create_publisher)
        self._create_inputs()
        self._start_worker()
        self._log_started(settings)
        if settings.map_path:
            self.get_logger().info(f"loading map {settings.map_path} on device {settings.device}")


def _ignore_further_interrupts() -> None:
    """Ctrl-C in a terminal signals the whole process group, so under ros2 launch a second SIGINT
    (relayed by launch) lands while the node cleans up: ignore it and finish cleaning up. One that
    arrives before SIG_IGN is in place raises KeyboardInterrupt here, so retry until it is.
    ros2 launch still escalates to SIGTERM / SIGKILL if the cleanup ever hangs."""
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue


def _interrupt_once(signum, frame) -> None:
    """The first SIGINT ends the spin; the handler itself switches SIGINT off before raising, so
    the second and third of a launch's burst can never land in the shutdown path (once one hit a
    Future's __del__ there: 'Exception ignored ... KeyboardInterrupt' on stderr)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(args=None) -> int:
    """Entry point of `ros2 run dsac_ros localizer`."""
    # Before rclpy.init: rclpy's own handler (it shuts the context down) chains to this one.
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        return _run(args)
    except KeyboardInterrupt:  # a second Ctrl-C that landed in the shutdown path, after the cleanup ran
        return 0


def _run(args) -> int:
    import argparse
    import sys

    rclpy.init(args=args)
    parser = argparse.ArgumentParser(prog="localizer", description="the dsac_ros localizer node")
    parser.add_argument("--lifecycle", action="store_true",
                        help="run as a lifecycle (managed) node: configure loads the map, activate starts it")
    options, _ = parser.parse_known_args(rclpy.utilities.remove_ros_args(args if args is not None else sys.argv)[1:])
    node = None
    try:
        try:
            if options.lifecycle:
                from dsac_ros.ros.lifecycle_node import LifecycleLocalizerNode

                node = LifecycleLocalizerNode()
            else:
                node = LocalizerNode()
        except (InvalidParameterValueException, ValueError) as error:
            # A bad parameter file or override: say which, without a traceback.
            rclpy.logging.get_logger("localizer").fatal(f"cannot start: {error}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT/SIGTERM shut the context down; an executor caught mid-wait then fails to build its
        # wait set (RCLError, "context is not valid"). That is a shutdown, not a crash.
        if rclpy.ok():
            raise
    finally:
        _ignore_further_interrupts()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
