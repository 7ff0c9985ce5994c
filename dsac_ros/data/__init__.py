"""Recordings in and out: folder and rosbag2 readers/writers, and the synthetic scenes.

``read_frames(path)`` works on either format and yields ``dsac_ros.frame.Frame``; ``open_recording``
returns the reader object itself (``len()`` for progress bars). Readers raise ``RecordingError``
(a ValueError) naming the problem: missing topic or file, unknown encoding, missing intrinsics,
corrupt or truncated data. The formats are described in docs/data_formats.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

from dsac_ros.camera import Intrinsics
from dsac_ros.data.errors import RecordingError
from dsac_ros.data.folder import FolderReader, write_folder
from dsac_ros.data.recording import RecordingOptions
from dsac_ros.frame import Frame

FORMATS = {
    "rosbag2": "rosbag2 directory (metadata.yaml) or .mcap / .db3 file; topics by --image-topic etc.",
    "folder": "dsac_ros folder: frame-*.color.png/jpg, registered depth, world_T_cam poses, intrinsics.txt",
    "7scenes": "7-Scenes / 12-Scenes scene or seq-NN folder as released: unregistered depth, depth-camera "
               "poses, the Kinect calibration facts (or 12-Scenes' info.txt)",
}

__all__ = ["FORMATS", "Frame", "RecordingError", "RecordingOptions", "FolderReader", "open_recording", "read_frames", "iterate_then_close", "count_frames",
           "is_bag", "write_folder", "write_bag"]


def is_bag(path) -> bool:
    """True for a rosbag2 directory (metadata.yaml) or a single .mcap / .db3 file."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").exists()
    return path.suffix in (".mcap", ".db3")


def open_recording(path, recording: Optional[RecordingOptions] = None, *, stamp_tolerance_s: float = 0.02,
                   intrinsics: Optional[Intrinsics] = None, **changes):
    """A FolderReader or BagReader for ``path`` (detected); iterate it for Frames, ``len()`` counts them.

    recording: the bag's topics and frames (``RecordingOptions``; ``changes`` replace single fields,
    e.g. ``tf_child="camera"``); they apply to bags only. ``intrinsics`` overrides the recording's.
    """
    topics = (recording or RecordingOptions()).with_changes(**changes)
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or directory")
    name = detect_format(path) if topics.format == "auto" else topics.format
    if name not in FORMATS:
        raise RecordingError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    if name != "7scenes" and (topics.frames or topics.split):
        raise RecordingError(f"{path}: frame ranges and split files apply to 7-Scenes folders, this is {name}")
    if name == "7scenes":
        from dsac_ros.data.sevenscenes import SevenScenesReader

        if intrinsics is not None:
            raise RecordingError(f"{path}: 7-Scenes folders take their calibration from info.txt or the Kinect "
                                 "facts, not --intrinsics")
        return SevenScenesReader(path, frames=topics.frames, split=topics.split)
    if name == "rosbag2":
        from dsac_ros.data.rosbag import BagReader

        return BagReader(path, **topics.as_kwargs(), stamp_tolerance_s=stamp_tolerance_s, intrinsics=intrinsics)
    if path.is_dir():
        return FolderReader(path, intrinsics=intrinsics)
    raise RecordingError(f"{path}: neither a folder recording nor a rosbag2 (directory with metadata.yaml, .mcap, .db3)")


def detect_format(path) -> str:
    """The FORMATS name of what lies at ``path``, from its contents."""
    from dsac_ros.data.sevenscenes import looks_like_seven_scenes

    path = Path(path)
    if is_bag(path):
        return "rosbag2"
    if path.is_dir() and looks_like_seven_scenes(path):
        return "7scenes"
    return "folder"


def read_frames(path, **options) -> Iterator[Frame]:
    """Frames of a folder or rosbag2 recording, in recording order (options: see ``open_recording``).

    The recording is opened (and checked for its topics and intrinsics) before this returns.
    """
    return iterate_then_close(open_recording(path, **options))


def iterate_then_close(reader) -> Iterator[Frame]:
    """Frames of an opened recording; the recording is closed when the iteration ends or stops."""
    try:
        yield from reader
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()


def count_frames(path, **options) -> int:
    """Number of frames ``read_frames`` will yield (image messages for a bag)."""
    reader = open_recording(path, **options)
    try:
        return len(reader)
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()


def write_bag(frames: Iterable[Frame], path, storage: str = "mcap", topics=None, compress: bool = True,
              image_format: str = "rgb8") -> int:
    """Write frames as a rosbag2 (see ``dsac_ros.data.rosbag.write_bag``); returns the frame count."""
    from dsac_ros.data.rosbag import BagTopics, write_bag as _write_bag

    return _write_bag(frames, path, storage=storage, topics=topics or BagTopics(), compress=compress,
                      image_format=image_format)
