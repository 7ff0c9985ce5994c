"""Command-line options naming a recording's topics and frames, shared by map, evaluate and
evaluate-live (they apply to rosbag2 recordings; folders have fixed file names)."""

from __future__ import annotations

import argparse
from typing import Optional

from dsac_ros.data.recording import RecordingOptions


def _optional(value: Optional[str]) -> Optional[str]:
    return None if value is None or value.strip().lower() in ("", "none") else value


def add_recording_arguments(parser: argparse.ArgumentParser, formats: bool = True) -> None:
    """Topic options; with ``formats`` also --format, --frames and --split (readers of folders)."""
    from dsac_ros.data import FORMATS

    if formats:
        _add_format_arguments(parser, FORMATS)
    _add_topic_arguments(parser)


def _add_format_arguments(parser: argparse.ArgumentParser, FORMATS: dict) -> None:
    data = parser.add_argument_group("data format and frame selection")
    data.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                      help="reader: " + "; ".join(f"{name}: {text}" for name, text in FORMATS.items())
                           + " (default: detected from the contents)")
    data.add_argument("--frames", default=None, metavar="RANGES",
                      help="7-Scenes: keep the frames numbered in these inclusive ranges, e.g. 0-199,300-599,700-999")
    data.add_argument("--split", default=None, metavar="FILE",
                      help="7-Scenes: keep the sequences (sequenceN lines, as TrainSplit.txt / TestSplit.txt) or "
                           "frames (seq-01/frame-000200 lines) a split file names; a path or a file in the scene folder")


def _add_topic_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rosbag2 topics and frames")
    group.add_argument("--image-topic", default=RecordingOptions.image_topic, help="sensor_msgs/Image or CompressedImage")
    group.add_argument("--camera-info-topic", default=RecordingOptions.camera_info_topic, help="sensor_msgs/CameraInfo")
    group.add_argument("--depth-topic", default=RecordingOptions.depth_topic,
                       help="registered depth image (32FC1 m / 16UC1 mm); 'none' to ignore depth")
    group.add_argument("--pose-topic", default=RecordingOptions.pose_topic,
                       help="ground truth, used before /tf: PoseStamped or PoseWithCovarianceStamped (camera pose) "
                            "or Odometry (its child frame, chained to the camera through TF); 'none' for TF only")
    group.add_argument("--tf-parent", default=RecordingOptions.tf_parent, help="ground truth from /tf: parent frame")
    group.add_argument("--tf-child", default=None,
                       help="ground truth from /tf: camera frame (default: the image's frame_id); chained "
                            "through /tf and /tf_static, e.g. map -> base_link -> camera_optical_frame")


def recording_options(args: argparse.Namespace) -> RecordingOptions:
    """``RecordingOptions`` (for ``open_recording``, ``map_recording``, live evaluation) from parsed options."""
    return RecordingOptions(image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                            depth_topic=_optional(args.depth_topic), pose_topic=_optional(args.pose_topic),
                            tf_parent=args.tf_parent, tf_child=_optional(args.tf_child),
                            format=getattr(args, "format", "auto"), frames=getattr(args, "frames", None),
                            split=getattr(args, "split", None))
