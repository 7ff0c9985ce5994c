"""Command-line options naming a recording's topics and frames, shared by map, evaluate and
evaluate-live (they apply to rosbag2 recordings; folders have fixed file names)."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from dsac_ros.data.rosbag import BagTopics


def _optional(value: Optional[str]) -> Optional[str]:
    return None if value is None or value.strip().lower() in ("", "none") else value


def add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rosbag2 topics and frames")
    group.add_argument("--image-topic", default=BagTopics.image, help="sensor_msgs/Image or CompressedImage")
    group.add_argument("--camera-info-topic", default=BagTopics.camera_info, help="sensor_msgs/CameraInfo")
    group.add_argument("--depth-topic", default=BagTopics.depth,
                       help="registered depth image (32FC1 m / 16UC1 mm); 'none' to ignore depth")
    group.add_argument("--pose-topic", default=BagTopics.pose,
                       help="ground truth, used before /tf: PoseStamped or PoseWithCovarianceStamped (camera pose) "
                            "or Odometry (its child frame, chained to the camera through TF); 'none' for TF only")
    group.add_argument("--tf-parent", default=BagTopics.map_frame, help="ground truth from /tf: parent frame")
    group.add_argument("--tf-child", default=None,
                       help="ground truth from /tf: camera frame (default: the image's frame_id); chained "
                            "through /tf and /tf_static, e.g. map -> base_link -> camera_optical_frame")


def recording_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``dsac_ros.data.open_recording`` / ``read_frames`` from parsed options."""
    return {"image_topic": args.image_topic, "camera_info_topic": args.camera_info_topic,
            "depth_topic": _optional(args.depth_topic), "pose_topic": _optional(args.pose_topic),
            "tf_parent": args.tf_parent, "tf_child": _optional(args.tf_child)}
