"""Feeding the ROS-free TF tree (``dsac_ros.tf_tree``) from a node's /tf and /tf_static subscriptions.

``TfBuffer`` and its errors live in ``dsac_ros.tf_tree`` (the bag reader uses them too) and are
importable from here as well.
"""

from __future__ import annotations

from dsac_ros.tf_tree import ExtrapolationError, FrameNotFoundError, TfBuffer, TransformError, slerp_xyzw


class TfListener:
    """Feeds a TfBuffer from /tf (reliable, volatile, depth 100) and /tf_static (reliable,
    transient local, depth 1), the QoS tf2_ros uses, so it connects to every broadcaster."""

    def __init__(self, node, buffer: TfBuffer, callback_group=None, ignore=None) -> None:
        """ignore(parent, child) -> True drops that edge (a node's own broadcasts, for instance)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        self.buffer = buffer
        self._ignore = ignore
        self._logger = node.get_logger()
        dynamic_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                                 reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        static_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.subscriptions = [
            node.create_subscription(TFMessage, "/tf", lambda msg: self._on_tf(msg, False), dynamic_qos,
                                     callback_group=callback_group),
            node.create_subscription(TFMessage, "/tf_static", lambda msg: self._on_tf(msg, True), static_qos,
                                     callback_group=callback_group),
        ]

    def _on_tf(self, msg, static: bool) -> None:
        from dsac_ros.ros.conversions import stamp_to_ns, transform_to_matrix

        for transform in msg.transforms:
            if self._ignore is not None and self._ignore(transform.header.frame_id.lstrip("/"),
                                                         transform.child_frame_id.lstrip("/")):
                continue
            try:
                self.buffer.set_transform(transform.header.frame_id, transform.child_frame_id,
                                          stamp_to_ns(transform.header.stamp),
                                          transform_to_matrix(transform.transform), static=static)
            except ValueError as error:
                self._logger.warning(f"ignoring a TF transform: {error}", throttle_duration_sec=5.0)


__all__ = ["ExtrapolationError", "FrameNotFoundError", "TfBuffer", "TfListener", "TransformError", "slerp_xyzw"]
