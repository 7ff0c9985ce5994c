"""The localizer node's inputs of one frame: CameraInfo -> camera model, the matching depth image,
decoding and undistortion (BAD_INPUT with the reason for anything unusable).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from sensor_msgs.msg import Image

from dsac_ros.msg import LocalizationStatus
from dsac_ros.camera import CameraInfoError, CameraModel, camera_model_from_info
from dsac_ros.ros.conversions import compressed_msg_to_rgb, depth_msg_to_m, image_msg_to_rgb


class FrameFailure(Exception):
    """A frame ends in a non-OK state; ``state`` is a LocalizationStatus.STATE_* constant."""

    def __init__(self, state: int, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


@dataclass
class PendingFrame:
    msg: Any
    compressed: bool
    stamp_ns: int
    received_ns: int


# Depth images are paired with the colour image of the same stamp; how long the worker waits
# for a depth image that has not arrived yet, and how many unmatched ones it keeps.
DEPTH_WAIT_S = 0.2
DEPTH_STAMP_TOLERANCE_NS = 1_000_000
MAX_BUFFERED_DEPTH = 5
MAX_BUFFERED_CAMERA_INFO = 10


class FrameInputMixin:
    """Methods of ``LocalizerNode`` (``dsac_ros.ros.node``); they use its state and parameters."""

    def _camera_model(self, stamp_ns: int) -> CameraModel:
        info = self._camera_infos_by_stamp.get(stamp_ns, self._camera_info)
        if info is None:
            raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT,
                               f"no CameraInfo received yet on {self.camera_info_topic}")
        cached_info, model = self._camera_model_cache
        if cached_info is not info:
            try:
                model = camera_model_from_info(info)
            except CameraInfoError as error:
                model = error
            self._camera_model_cache = (info, model)
        if isinstance(model, CameraInfoError):
            raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT, f"CameraInfo: {model}")
        return model

    def _depth_for(self, stamp_ns: int, deadline_s: float) -> Image:
        with self._cond:
            while True:
                match = next((msg for stamp, msg in self._depth_msgs.items()
                              if abs(stamp - stamp_ns) <= DEPTH_STAMP_TOLERANCE_NS), None)
                remaining = deadline_s - time.monotonic()
                if match is not None or remaining <= 0 or self._stop:
                    break
                self._cond.wait(timeout=remaining)
        if match is None:
            raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT,
                               f"no depth image with the image's stamp on {self._topic('depth')}")
        return match

    def _decode(self, frame: PendingFrame, settings) -> tuple[np.ndarray, Any, Optional[np.ndarray]]:
        """-> (image_rgb (H, W, 3) uint8 undistorted, Intrinsics, depth_m (H, W) or None)."""
        from dsac_ros.data.images import ImageDecodeError

        model = self._camera_model(frame.stamp_ns)
        try:
            image_rgb = compressed_msg_to_rgb(frame.msg) if frame.compressed else image_msg_to_rgb(frame.msg)
        except ImageDecodeError as error:
            raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT, f"image: {error}") from None
        intrinsics = model.intrinsics
        height, width = image_rgb.shape[:2]
        if (width, height) != (intrinsics.width_px, intrinsics.height_px):
            raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT,
                               f"image is {width}x{height} but CameraInfo is for "
                               f"{intrinsics.width_px}x{intrinsics.height_px}")
        image_rgb = self._undistorter.undistort_rgb(image_rgb, model)
        depth_m = None
        if settings.use_depth:
            depth_msg = self._depth_for(frame.stamp_ns, time.monotonic() + DEPTH_WAIT_S)
            try:
                depth_m = depth_msg_to_m(depth_msg)
            except ImageDecodeError as error:
                raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT, f"depth: {error}") from None
            if depth_m.shape != (height, width):
                raise FrameFailure(LocalizationStatus.STATE_BAD_INPUT,
                                   f"depth is {depth_m.shape[1]}x{depth_m.shape[0]} but the image is {width}x{height}")
            depth_m = self._undistorter.undistort_depth(depth_m, model)
        return image_rgb, intrinsics, depth_m
