"""The localizer node's ~/status between frames (NO_IMAGE, NO_MODEL) and its /diagnostics."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from dsac_ros.msg import LocalizationStatus
from dsac_ros.ros import params as node_params
from dsac_ros.ros.conversions import STATUS_OF_STATE, ns_to_stamp

STATE_NAMES = {state: status.value for state, status in STATUS_OF_STATE.items()}
DIAGNOSTIC_LEVELS = {
    LocalizationStatus.STATE_OK: DiagnosticStatus.OK,
    LocalizationStatus.STATE_LOST: DiagnosticStatus.WARN,
    LocalizationStatus.STATE_NO_IMAGE: DiagnosticStatus.WARN,
    LocalizationStatus.STATE_BAD_INPUT: DiagnosticStatus.WARN,
    LocalizationStatus.STATE_NO_MODEL: DiagnosticStatus.ERROR,
}


class StatusOutputMixin:
    """Methods of ``LocalizerNode`` (``dsac_ros.ros.node``); they use its state and parameters."""

    def _make_status(self, state: int, reason: str, stamp_ns: int, settings) -> LocalizationStatus:
        status = LocalizationStatus()
        status.header.stamp = ns_to_stamp(stamp_ns)
        status.header.frame_id = settings.map_frame
        status.state = state
        status.state_name = STATE_NAMES[state]
        status.reason = reason
        status.frames_dropped = self.frames_dropped
        status.frames_processed = self.frames_processed
        status.device = self._device_name
        status.backend = self._backend_name
        status.map_path = settings.map_path
        return status

    def _on_status_timer(self) -> None:
        settings = node_params.NodeSettings.from_node(self)
        now_ns = self._now_ns()
        last = self._last_image_received_ns
        idle = last is None or (now_ns - last) > settings.image_timeout_s * 1e9
        # While a map loads the worker answers no frame, so the timer says why, images or not.
        if idle or (self._localizer is None and self._model_loading):
            if self._localizer is None:
                status = self._make_status(LocalizationStatus.STATE_NO_MODEL, self._model_error, now_ns, settings)
                self._log_no_model()
            else:
                waited = "no image received yet" if last is None else \
                    f"no image for {(now_ns - last) * 1e-9:.1f} s (image_timeout_s {settings.image_timeout_s:g})"
                status = self._make_status(LocalizationStatus.STATE_NO_IMAGE, f"{waited} on {self.image_topic}",
                                           now_ns, settings)
            self._status_pub.publish(status)
            self._last_status = status
        self._publish_diagnostics(now_ns, settings)

    def _publish_diagnostics(self, now_ns: int, settings) -> None:
        status = self._last_status
        state = status.state if status is not None else LocalizationStatus.STATE_NO_IMAGE
        diagnostic = DiagnosticStatus()
        diagnostic.name = f"{self.get_fully_qualified_name()}: localization"
        diagnostic.hardware_id = self._device_name or "none"
        diagnostic.level = DIAGNOSTIC_LEVELS[state]
        if state == LocalizationStatus.STATE_NO_MODEL and self._model_loading:
            diagnostic.level = DiagnosticStatus.WARN
        diagnostic.message = STATE_NAMES[state] + (f": {status.reason}" if status is not None and status.reason else "")
        broadcast = self._broadcast
        values = {
            "state": STATE_NAMES[state],
            "frames_received": self.frames_received,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "resets": self.resets,
            "last_reset_reason": self._reset_reason,
            "map_path": settings.map_path,
            "model": "loaded" if self._localizer is not None else self._model_error,
            "device": self._device_name,
            "backend": self._backend_name,
            "tf_mode": settings.tf_mode,
            "tf_source": broadcast.source if broadcast is not None else "none",
            "tf_problem": self._tf_problem,
        }
        if status is not None:
            values.update({"inliers": status.inlier_count, "inlier_ratio": f"{status.inlier_ratio:.3f}",
                           "total_ms": f"{status.total_ms:.1f}", "latency_ms": f"{status.latency_ms:.1f}"})
        diagnostic.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        array = DiagnosticArray()
        array.header.stamp = ns_to_stamp(now_ns)
        array.status = [diagnostic]
        self._diagnostics_pub.publish(array)
