"""TF the localizer node broadcasts: map -> odom / base / camera from each fix or the
initialpose prior, republished at a steady rate, never with a repeated stamp (see node.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage

from dsac_ros.geometry import invert_pose
from dsac_ros.ros import params as node_params
from dsac_ros.ros.conversions import matrix_to_transform, ns_to_stamp
from dsac_ros.ros.tf_buffer import TransformError


@dataclass
class Broadcast:
    """The TF the node keeps republishing: parent_T_child and where it came from."""

    parent: str
    child: str
    parent_T_child: np.ndarray
    stamp_ns: int
    source: str  # "localisation" or "initialpose"


class TfOutputMixin:
    """Methods of ``LocalizerNode`` (``dsac_ros.ros.node``); they use its state and parameters."""

    def _send_tf(self, broadcast: Broadcast, stamp_ns: int) -> None:
        self._own_tf_edges.add((broadcast.parent, broadcast.child))
        transform = TransformStamped()
        transform.header.stamp = ns_to_stamp(stamp_ns)
        transform.header.frame_id = broadcast.parent
        transform.child_frame_id = broadcast.child
        transform.transform = matrix_to_transform(broadcast.parent_T_child)
        self._tf_pub.publish(TFMessage(transforms=[transform]))
        with self._state_lock:
            self._last_tf_stamp_ns = max(self._last_tf_stamp_ns or 0, stamp_ns)

    def _republish_tf(self) -> None:
        """Republish the last TF stamped now + transform_tolerance (ROS time, so sim time in
        replays); skipped unless that is later than the last stamp sent, since tf2 rejects
        repeated stamps (TF_REPEATED_DATA)."""
        if not self.get_parameter("publish_tf").value:
            return
        if self._broadcast is None:
            self._apply_prior()
        with self._state_lock:
            broadcast, last_ns = self._broadcast, self._last_tf_stamp_ns
        if broadcast is None:
            return
        settings = node_params.NodeSettings.from_node(self)
        if (broadcast.parent, broadcast.child) != self._tf_edge(settings, broadcast.child):
            return  # tf_mode or a frame name changed: the old edge is not republished
        stamp_ns = self._now_ns() + int(round(self.get_parameter("transform_tolerance").value * 1e9))
        if last_ns is not None and stamp_ns <= last_ns:
            return
        self._send_tf(broadcast, stamp_ns)

    @staticmethod
    def _tf_edge(settings, camera_frame: str) -> tuple[str, str]:
        """(parent, child) of the TF this node broadcasts under ``settings``."""
        child = {"map_to_odom": settings.odom_frame, "map_to_base": settings.base_frame}.get(
            settings.tf_mode, settings.camera_frame or camera_frame)
        return settings.map_frame, child

    def _apply_prior(self) -> None:
        """Broadcast TF from the initialpose prior while nothing has been localised yet."""
        with self._state_lock:
            prior = self._prior
            if prior is None or self._has_localised:
                return
        settings = node_params.NodeSettings.from_node(self)
        map_T_child, stamp_ns = prior
        if settings.tf_mode == "map_to_odom":
            try:
                odom_T_base = self._lookup_at_or_latest(settings.odom_frame, settings.base_frame, stamp_ns)
            except TransformError as error:
                self._tf_problem = f"initialpose waits for TF: {error}"
                return
            broadcast = Broadcast(settings.map_frame, settings.odom_frame, map_T_child @ invert_pose(odom_T_base),
                                   stamp_ns, "initialpose")
        elif settings.tf_mode == "map_to_base":
            broadcast = Broadcast(settings.map_frame, settings.base_frame, map_T_child, stamp_ns, "initialpose")
        else:
            if not settings.camera_frame:
                self._tf_problem = "initialpose in map_to_camera mode needs the camera_frame parameter"
                return
            broadcast = Broadcast(settings.map_frame, settings.camera_frame, map_T_child, stamp_ns, "initialpose")
        with self._state_lock:
            if self._has_localised or self._prior is not prior:
                return
            self._broadcast = broadcast
        if settings.publish_tf:
            self._send_tf(broadcast, stamp_ns + int(round(settings.transform_tolerance_s * 1e9)))

    def _lookup_at_or_latest(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """At the prior's stamp if buffered, else the latest (RViz stamps initialpose with 'now')."""
        try:
            return self.tf_buffer.lookup(target, source, stamp_ns)
        except TransformError:
            return self.tf_buffer.lookup(target, source, 0)

    def _update_tf(self, map_T_cam, cam_T_base, base_problem: str, camera_frame: str, stamp_ns: int, settings) -> None:
        broadcast, problem = None, ""
        if settings.tf_mode == "map_to_camera":
            if camera_frame:
                broadcast = Broadcast(settings.map_frame, camera_frame, map_T_cam, stamp_ns, "localisation")
            else:
                problem = "the image has no frame_id and camera_frame is empty"
        elif cam_T_base is None:
            problem = f"TF {settings.base_frame} -> {camera_frame or '?'} unavailable: {base_problem}"
        else:
            map_T_base = map_T_cam @ cam_T_base
            if settings.tf_mode == "map_to_base":
                broadcast = Broadcast(settings.map_frame, settings.base_frame, map_T_base, stamp_ns, "localisation")
            else:
                try:
                    odom_T_base = self.tf_buffer.lookup(settings.odom_frame, settings.base_frame, stamp_ns)
                    broadcast = Broadcast(settings.map_frame, settings.odom_frame,
                                           map_T_base @ invert_pose(odom_T_base), stamp_ns, "localisation")
                except TransformError as error:
                    problem = f"TF not updated: {error}"
        with self._state_lock:
            self._has_localised = True
            self._tf_problem = problem if settings.publish_tf else ""
            if broadcast is not None:
                self._broadcast = broadcast
        if problem and settings.publish_tf:
            self.get_logger().warning(problem, throttle_duration_sec=5.0)
        if broadcast is not None and settings.publish_tf:
            self._send_tf(broadcast, stamp_ns + int(round(settings.transform_tolerance_s * 1e9)))
