"""Which topics and frames of a rosbag2 recording hold the data (``open_recording``'s options).

Folders have fixed file names; these options apply to bags. The defaults are what
``dsac-ros synth`` writes (``dsac_ros.data.rosbag.BagTopics``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from dsac_ros.data.rosbag import BagTopics


@dataclass(frozen=True)
class RecordingOptions:
    """image_topic: sensor_msgs/Image or CompressedImage; camera_info_topic: CameraInfo;
    depth_topic: registered depth (32FC1 m / 16UC1 mm), None to ignore depth; pose_topic: ground
    truth before /tf (PoseStamped / PoseWithCovarianceStamped of the camera, or Odometry chained to
    the camera through TF), None for TF only; tf_parent / tf_child: ground truth from /tf (child
    None: the images' frame_id). format: ``auto`` (detected) or a name of ``dsac_ros.data.FORMATS``;
    frames: inclusive frame-number ranges to keep ('0-199,300-599'); split: a split file (7-Scenes'
    TrainSplit.txt / TestSplit.txt, or frame names); frames and split apply to 7-Scenes folders."""

    image_topic: str = BagTopics.image
    camera_info_topic: str = BagTopics.camera_info
    depth_topic: Optional[str] = BagTopics.depth
    pose_topic: Optional[str] = BagTopics.pose
    tf_parent: str = BagTopics.map_frame
    tf_child: Optional[str] = None
    # Which reader and which frames (folders): see ``dsac_ros.data.FORMATS`` and ``sevenscenes``.
    format: str = "auto"
    frames: Optional[str] = None
    split: Optional[str] = None

    def with_changes(self, **changes: Any) -> "RecordingOptions":
        return dataclasses.replace(self, **changes) if changes else self

    def as_kwargs(self) -> dict[str, Any]:
        """The bag reader's topic and frame keywords."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if key not in ("format", "frames", "split")}


__all__ = ["RecordingOptions"]
