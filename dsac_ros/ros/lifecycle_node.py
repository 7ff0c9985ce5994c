"""The localizer as a managed (lifecycle) node, for nav2's lifecycle manager or ``ros2 lifecycle set``.

Same parameters, topics and behaviour as ``LocalizerNode`` (``dsac_ros.ros.node``); what exists in
each state follows nav2's nodes:

    unconfigured  parameters only; nothing published or subscribed, no map in memory
    configure     loads the map (a map that fails to load fails the transition, with the reason
                  logged, and the node stays unconfigured); creates the publishers, the 1 Hz
                  diagnostics and the worker thread
    inactive      diagnostics only: ~/pose, ~/pose_with_covariance, ~/status and /tf are
                  lifecycle publishers, which send nothing until activated
    activate      subscribes to images, CameraInfo, depth, initialpose and TF; TF republishing starts
    deactivate    unsubscribes, drops a waiting frame and the last pose, so TF is neither published
                  nor republished, and a later activation never broadcasts a stale pose
    cleanup       stops the worker, frees the map, destroys the publishers
    shutdown      from any state: whatever exists is torn down

``map_path`` changes while configured reload in the worker, as in the plain node. rclpy's
lifecycle API is used under the names Humble's rclpy already has (``rclpy.lifecycle.Node``,
``State``, ``TransitionCallbackReturn``; Humble 3.3, Jazzy, Kilted).
"""

from __future__ import annotations

from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn

from dsac_ros.ros import params as node_params
from dsac_ros.ros.node import LocalizerCore, default_localizer_factory


class LifecycleLocalizerNode(LocalizerCore, LifecycleNode):
    """See the module docstring; arguments as for ``LocalizerNode``."""

    def __init__(self, node_name: str = "localizer", *, localizer_factory=default_localizer_factory,
                 **node_kwargs) -> None:
        super().__init__(node_name, **node_kwargs)
        self._init_core(node_name, localizer_factory, load_at_start=False)
        self._configured = False
        self._active = False
        self.get_logger().info("localizer (lifecycle) up, unconfigured: configure loads the map")

    @property
    def active(self) -> bool:
        """True between activate and deactivate."""
        return self._active

    # ------------------------------------------------------------------ transitions

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        settings = node_params.NodeSettings.from_node(self)
        self._create_outputs(self.create_lifecycle_publisher)
        self._ensure_model(settings)
        if self._localizer is None:
            self.get_logger().error(f"configure failed: {self._model_error}")
            self._destroy_outputs()
            return TransitionCallbackReturn.FAILURE
        self._start_worker()
        self._configured = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._create_inputs()
        self._active = True
        self._log_started(node_params.NodeSettings.from_node(self))
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)  # disables the lifecycle publishers

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self._active:
            self._deactivate()
        if self._configured:
            self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        # Back to unconfigured with nothing left running (rclpy then reports the error state).
        self.on_shutdown(state)
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ helpers

    def _deactivate(self) -> None:
        self._active = False
        self._destroy_inputs()
        with self._frame_lock:  # a frame in flight finishes first (its outputs are already disabled)
            self._forget_pose()
        self._last_image_received_ns = None
        self.get_logger().info("deactivated: no input, no pose and no TF until activated")

    def _cleanup(self) -> None:
        self._stop_worker()
        self._release_model("not configured (cleaned up)")
        self._destroy_outputs()
        self._configured = False
        self.get_logger().info("cleaned up: map released")


__all__ = ["LifecycleLocalizerNode"]
