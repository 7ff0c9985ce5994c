"""The localizer node's publishers, subscriptions, timers and worker thread, created and destroyed
as a whole (``LocalizerNode``) or per lifecycle transition (``LifecycleLocalizerNode``)."""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tf2_msgs.msg import TFMessage

from dsac_ros.msg import LocalizationStatus
from dsac_ros.ros import params as node_params
from dsac_ros.ros.tf_buffer import TfListener


def sensor_qos(depth: int = 1) -> QoSProfile:
    """The sensor-data profile (best effort, volatile) with a small queue: old frames are dropped."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


class NodeIoMixin:
    """Methods of ``LocalizerCore`` (``dsac_ros.ros.node``); they use its state and callbacks."""

    def _create_outputs(self, create_publisher) -> None:
        """Publishers (``create_publisher``: the node's, or its lifecycle publisher factory for the
        outputs a deactivated node must not send) and the 1 Hz status / diagnostics timer."""
        reliable_latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pose_pub = create_publisher(PoseStamped, "~/pose", reliable_latched)
        self._pose_cov_pub = create_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", reliable_latched)
        self._status_pub = create_publisher(LocalizationStatus, "~/status",
                                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._tf_pub = create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        # Diagnostics describe the node in every state, so they are never a lifecycle output.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._status_timer = self.create_timer(1.0, self._on_status_timer)

    def _destroy_outputs(self) -> None:
        if self._status_timer is not None:
            self.destroy_timer(self._status_timer)
        for publisher in (self._pose_pub, self._pose_cov_pub, self._status_pub, self._tf_pub, self._diagnostics_pub):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._pose_pub = self._pose_cov_pub = self._status_pub = self._diagnostics_pub = self._tf_pub = None
        self._status_timer = None

    def _create_inputs(self) -> None:
        """Subscriptions (images, CameraInfo, depth, initialpose, TF) and the TF republish timer."""
        settings = node_params.NodeSettings.from_node(self)
        self._tf_listener = TfListener(self, self.tf_buffer, ignore=lambda parent, child:
                                       (parent, child) in self._own_tf_edges)
        if settings.use_compressed:
            self._image_sub = self.create_subscription(CompressedImage, "image/compressed",
                                                       lambda msg: self._on_image(msg, True), sensor_qos())
        else:
            self._image_sub = self.create_subscription(Image, "image", lambda msg: self._on_image(msg, False),
                                                       sensor_qos())
        self._camera_info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                         sensor_qos())
        self._depth_sub = (self.create_subscription(Image, "depth", self._on_depth, sensor_qos())
                           if settings.use_depth else None)
        self._initialpose_sub = self.create_subscription(
            PoseWithCovarianceStamped, "initialpose", self._on_initialpose,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._tf_timer = self.create_timer(1.0 / settings.tf_publish_rate_hz, self._republish_tf)
        self._input_topics = {"image": self._image_sub.topic_name, "camera_info": self._camera_info_sub.topic_name}
        if self._depth_sub is not None:
            self._input_topics["depth"] = self._depth_sub.topic_name

    def _destroy_inputs(self) -> None:
        """Undo ``_create_inputs``; a frame still waiting is discarded (nothing localises it)."""
        if self._tf_timer is not None:
            self.destroy_timer(self._tf_timer)
            self._tf_timer = None
        subscriptions = [self._image_sub, self._camera_info_sub, self._depth_sub, self._initialpose_sub]
        if self._tf_listener is not None:
            subscriptions += self._tf_listener.subscriptions
        for subscription in subscriptions:
            if subscription is not None:
                self.destroy_subscription(subscription)
        self._image_sub = self._camera_info_sub = self._depth_sub = self._initialpose_sub = None
        self._tf_listener = None
        with self._cond:
            self._pending = None

    def _start_worker(self) -> None:
        with self._cond:
            self._stop = False
        self._worker = threading.Thread(target=self._run_worker, name=f"{self._node_name}_worker", daemon=True)
        self._worker.start()

    def _stop_worker(self, timeout_s: float = 30.0) -> None:
        worker = self._worker
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout=timeout_s)
        self._worker = None

    def _topic(self, name: str) -> str:
        """The resolved name of input ``name`` ("image", "camera_info", "depth") once subscribed."""
        return self._input_topics.get(name, name)

    @property
    def image_topic(self) -> str:
        return self._topic("image")

    @property
    def camera_info_topic(self) -> str:
        return self._topic("camera_info")
