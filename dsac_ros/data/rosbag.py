"""rosbag2 recordings (MCAP or sqlite3) through the pure-Python ``rosbags`` library: no ROS needed.

Written bags (``write_bag``) hold, per frame and all stamped with the image stamp:

| topic (default) | type | content |
|---|---|---|
| ``/camera/image_raw`` | sensor_msgs/msg/Image | ``rgb8`` colour image |
| ``/camera/camera_info`` | sensor_msgs/msg/CameraInfo | K, P and the frame's distortion (none: ``plumb_bob``, zeros) |
| ``/camera/depth/image_raw`` | sensor_msgs/msg/Image | ``32FC1`` z-depth in metres, 0 = invalid |
| ``/tf`` | tf2_msgs/msg/TFMessage | ``map`` -> ``camera_optical_frame`` ground truth |
| ``/ground_truth/pose`` | geometry_msgs/msg/PoseStamped | the same pose, frame ``map`` |

Messages use the Humble type definitions (unchanged through Jazzy and Kilted). MCAP bags are
zstd-compressed per chunk (storage compression, which ``ros2 bag play`` reads natively).

The reader (``BagReader``) yields one pinhole Frame per image message: CameraInfo from the message
with the nearest stamp, read by ``dsac_ros.camera`` (refused with the reason when its size is not the
image's or its distortion model is unsupported); lens distortion is removed from image and depth
with the node's own ``Undistorter``, so a map made from a bag and the live node see the same images.
Depth and ground-truth pose are associated by stamp within a tolerance. Ground truth comes from the
pose topic when the bag has it, otherwise from TF: ``tf_parent`` -> ``tf_child`` (the image's
frame_id by default) through ``dsac_ros.tf_tree.TfBuffer``, the node's TF tree (interpolated between
samples; within the tolerance beyond the first and last).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from dsac_ros.camera import CameraInfoError, CameraModel, Intrinsics, Undistorter, camera_model_from_info
from dsac_ros.data import images
from dsac_ros.data.errors import RecordingError
from dsac_ros.frame import Frame
from dsac_ros.geometry import quaternion_xyzw_from_rotation
from dsac_ros.message_fields import pose_to_matrix, stamp_to_ns, transform_to_matrix
from dsac_ros.tf_tree import TfBuffer, TransformError

# The reader keeps a recording's whole TF history (one bag), so the buffer's window is unbounded.
BAG_TF_CACHE_S = 1e9

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
POSE_COVARIANCE_TYPE = "geometry_msgs/msg/PoseWithCovarianceStamped"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
# Ground-truth pose topics: PoseStamped / PoseWithCovarianceStamped give the camera's pose;
# Odometry gives its child_frame_id's pose, chained to the camera through TF when they differ.
GROUND_TRUTH_TYPES = (POSE_TYPE, POSE_COVARIANCE_TYPE, ODOMETRY_TYPE)


@dataclass(frozen=True)
class BagTopics:
    """Topic and frame names of a recording (defaults: what ``dsac-ros synth`` writes)."""

    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    depth: Optional[str] = "/camera/depth/image_raw"
    tf: str = "/tf"
    tf_static: str = "/tf_static"
    pose: Optional[str] = "/ground_truth/pose"
    map_frame: str = "map"
    camera_frame: str = "camera_optical_frame"


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


# --------------------------------------------------------------------------------------------------
# writing


class _MessageFactory:
    def __init__(self, typestore) -> None:
        self.ts = typestore
        self.t = typestore.types

    def header(self, stamp_ns: int, frame_id: str):
        time = self.t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                     nanosec=int(stamp_ns % 1_000_000_000))
        return self.t["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def image(self, header, height: int, width: int, encoding: str, step: int, data: bytes):
        return self.t[IMAGE_TYPE](header=header, height=height, width=width, encoding=encoding,
                                  is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))

    def compressed(self, header, fmt: str, data: bytes):
        return self.t[COMPRESSED_TYPE](header=header, format=fmt, data=np.frombuffer(data, np.uint8))

    def camera_info(self, header, intrinsics: Intrinsics, distortion_model: str = "plumb_bob",
                    distortion: tuple = ()):
        K = intrinsics.K
        d = np.asarray(distortion, dtype=np.float64) if len(distortion) else np.zeros(5)
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t[CAMERA_INFO_TYPE](
            header=header, height=intrinsics.height_px, width=intrinsics.width_px, distortion_model=distortion_model,
            d=d, k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=roi)

    def _translation_rotation(self, pose: np.ndarray):
        q = quaternion_xyzw_from_rotation(pose[:3, :3])
        quaternion = self.t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])
        return pose[:3, 3].astype(np.float64), quaternion

    def tf(self, header, child: str, parent_T_child: np.ndarray):
        translation, quaternion = self._translation_rotation(parent_T_child)
        vector = self.t["geometry_msgs/msg/Vector3"](x=translation[0], y=translation[1], z=translation[2])
        transform = self.t["geometry_msgs/msg/Transform"](translation=vector, rotation=quaternion)
        stamped = self.t["geometry_msgs/msg/TransformStamped"](header=header, child_frame_id=child, transform=transform)
        return self.t[TF_TYPE](transforms=[stamped])

    def pose(self, header, world_T_cam: np.ndarray):
        translation, quaternion = self._translation_rotation(world_T_cam)
        point = self.t["geometry_msgs/msg/Point"](x=translation[0], y=translation[1], z=translation[2])
        pose = self.t["geometry_msgs/msg/Pose"](position=point, orientation=quaternion)
        return self.t[POSE_TYPE](header=header, pose=pose)


def write_bag(frames: Iterable[Frame], path, storage: str = "mcap", topics: BagTopics = BagTopics(),
              compress: bool = True, image_format: str = "rgb8") -> int:
    """Write frames to a new rosbag2 directory; returns the number of frames written.

    storage: "mcap" (default; zstd chunk compression when ``compress``) or "sqlite3" (uncompressed).
    image_format: "rgb8" (sensor_msgs/Image), or "jpeg" / "png" (sensor_msgs/CompressedImage).
    Depth (when a frame has it) is written as 32FC1 metres; the pose (when known) both on /tf and on
    the pose topic. Topics set to None in ``topics`` are not written.
    """
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if image_format not in ("rgb8", "jpeg", "png"):
        raise ValueError(f"image_format must be rgb8, jpeg or png, got {image_format!r}")
    typestore = _typestore()
    make = _MessageFactory(typestore)
    count = 0
    writer = Writer(Path(path), version=9, storage_plugin=plugins[storage])
    if compress and storage == "mcap":
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        def connect(topic, msgtype):
            return writer.add_connection(topic, msgtype, typestore=typestore) if topic else None

        image_conn = connect(topics.image, IMAGE_TYPE if image_format == "rgb8" else COMPRESSED_TYPE)
        info_conn = connect(topics.camera_info, CAMERA_INFO_TYPE)
        depth_conn = connect(topics.depth, IMAGE_TYPE)
        tf_conn = connect(topics.tf, TF_TYPE)
        pose_conn = connect(topics.pose, POSE_TYPE)

        def put(connection, message, msgtype, stamp):
            if connection is not None:
                writer.write(connection, stamp, typestore.serialize_cdr(message, msgtype))

        for frame in frames:
            stamp = int(frame.stamp_ns)
            header = make.header(stamp, topics.camera_frame)
            image = np.asarray(frame.image_rgb)
            height, width = image.shape[:2]
            put(info_conn, make.camera_info(header, frame.intrinsics, frame.distortion_model, frame.distortion),
                CAMERA_INFO_TYPE, stamp)
            if image_format == "rgb8":
                step, data = images.encode_image(image, "rgb8")
                put(image_conn, make.image(header, height, width, "rgb8", step, data), IMAGE_TYPE, stamp)
            else:
                fmt, data = images.encode_compressed(image, image_format)
                put(image_conn, make.compressed(header, fmt, data), COMPRESSED_TYPE, stamp)
            if frame.depth_m is not None:
                step, data = images.encode_image(frame.depth_m, "32FC1")
                put(depth_conn, make.image(header, height, width, "32FC1", step, data), IMAGE_TYPE, stamp)
            if frame.world_T_cam is not None:
                pose = np.asarray(frame.world_T_cam, np.float64)
                put(tf_conn, make.tf(make.header(stamp, topics.map_frame), topics.camera_frame, pose), TF_TYPE, stamp)
                put(pose_conn, make.pose(make.header(stamp, topics.map_frame), pose), POSE_TYPE, stamp)
            count += 1
    return count


# --------------------------------------------------------------------------------------------------
# transforms


# --------------------------------------------------------------------------------------------------
# reading


class _StampIndex:
    """Values sorted by stamp, with nearest-stamp lookup."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.values: list = []

    def add(self, stamp_ns: int, value) -> None:
        position = bisect.bisect(self.stamps, stamp_ns)
        self.stamps.insert(position, stamp_ns)
        self.values.insert(position, value)

    def nearest(self, stamp_ns: int, tolerance_ns: Optional[int]):
        if not self.stamps:
            return None
        i = bisect.bisect_left(self.stamps, stamp_ns)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.stamps)), key=lambda j: abs(self.stamps[j] - stamp_ns))
        if tolerance_ns is not None and abs(self.stamps[best] - stamp_ns) > tolerance_ns:
            return None
        return self.values[best]


class BagReader:
    """Frames of a rosbag2 recording; ``len()`` is the number of image messages.

    path: a bag directory (MCAP or sqlite3, with metadata.yaml) or a single .mcap / .db3 file.
    image_topic: sensor_msgs/Image or CompressedImage; camera_info_topic: sensor_msgs/CameraInfo
    (not needed when ``intrinsics`` is given); depth_topic: optional depth images (None: ignore);
    pose_topic: optional ground truth (None: ignore), used before TF: PoseStamped or
        PoseWithCovarianceStamped (the camera's pose), or Odometry (its child_frame_id's pose,
        chained to the camera frame through TF when the two differ);
    tf_parent / tf_child: ground truth from TF (tf_child None: the image's frame_id);
    stamp_tolerance_s: how far depth, pose and TF stamps may be from the image stamp.
    """

    def __init__(self, path, *, image_topic: str = BagTopics.image, camera_info_topic: str = BagTopics.camera_info,
                 depth_topic: Optional[str] = BagTopics.depth, pose_topic: Optional[str] = BagTopics.pose,
                 tf_topic: str = BagTopics.tf, tf_static_topic: str = BagTopics.tf_static,
                 tf_parent: str = BagTopics.map_frame, tf_child: Optional[str] = None,
                 stamp_tolerance_s: float = 0.02, intrinsics: Optional[Intrinsics] = None) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        self.image_topic, self.camera_info_topic = image_topic, camera_info_topic
        self.depth_topic, self.pose_topic = depth_topic, pose_topic
        self.tf_topics = (tf_topic, tf_static_topic)
        self.tf_parent, self.tf_child = tf_parent, tf_child
        self.tolerance_ns = int(round(stamp_tolerance_s * 1e9))
        self.intrinsics_override = intrinsics
        self.typestore = _typestore()
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError as error:
            raise RecordingError(f"{self.path}: no such bag ({error})") from None
        except Exception as error:  # rosbags raises several types for damaged files
            raise RecordingError(f"{self.path}: corrupt or unreadable bag: {error}") from None
        self.topics = {topic: info for topic, info in self._reader.topics.items()}
        if image_topic not in self.topics:
            raise RecordingError(f"{self.path}: no image topic {image_topic!r}; topics present: {self._topic_list()}")
        self.image_type = self.topics[image_topic].msgtype
        if self.image_type not in (IMAGE_TYPE, COMPRESSED_TYPE):
            raise RecordingError(f"{self.path}: topic {image_topic!r} has type {self.image_type}, "
                                 f"expected {IMAGE_TYPE} or {COMPRESSED_TYPE}")
        if intrinsics is None and camera_info_topic not in self.topics:
            raise RecordingError(
                f"{self.path}: missing intrinsics: no CameraInfo topic {camera_info_topic!r} "
                f"(pass camera_info_topic or intrinsics); topics present: {self._topic_list()}")

    def _topic_list(self) -> str:
        return ", ".join(f"{topic} ({info.msgtype})" for topic, info in sorted(self.topics.items())) or "none"

    def __len__(self) -> int:
        return int(self.topics[self.image_topic].msgcount)

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connections(self, topic: Optional[str]):
        if topic is None or topic not in self.topics:
            return []
        return list(self.topics[topic].connections)

    def _messages(self, connections):
        """Deserialised (connection, message) pairs in bag order; damage becomes RecordingError."""
        if not connections:
            return
        try:
            for connection, _, raw in self._reader.messages(connections=connections):
                yield connection, self.typestore.deserialize_cdr(raw, connection.msgtype)
        except RecordingError:
            raise
        except Exception as error:
            raise RecordingError(f"{self.path}: corrupt or truncated bag: {type(error).__name__}: {error}") from None

    def _read_small_topics(self):
        infos, poses, tf = _StampIndex(), _StampIndex(), TfBuffer(cache_time_s=BAG_TF_CACHE_S)
        static_connections = self._connections(self.tf_topics[1])
        connections = (self._connections(self.camera_info_topic) + self._connections(self.pose_topic)
                       + self._connections(self.tf_topics[0]) + static_connections)
        for connection in self._connections(self.pose_topic):
            if connection.msgtype not in GROUND_TRUTH_TYPES:
                raise RecordingError(f"{self.path}: ground-truth topic {self.pose_topic!r} has type {connection.msgtype}; "
                                     f"supported: {', '.join(GROUND_TRUTH_TYPES)}")
        for connection, message in self._messages(connections):
            if connection.topic == self.camera_info_topic and connection.msgtype == CAMERA_INFO_TYPE:
                infos.add(stamp_to_ns(message.header.stamp), message)
            elif connection.topic == self.pose_topic and connection.msgtype in GROUND_TRUTH_TYPES:
                pose_message = message.pose if connection.msgtype == POSE_TYPE else message.pose.pose
                body = message.child_frame_id if connection.msgtype == ODOMETRY_TYPE else None
                try:
                    poses.add(stamp_to_ns(message.header.stamp), (pose_to_matrix(pose_message), body or None))
                except ValueError:
                    pass  # a zero quaternion: no ground truth at that stamp
            elif connection.msgtype == TF_TYPE:
                for transform in message.transforms:
                    try:
                        tf.set_transform(transform.header.frame_id, transform.child_frame_id,
                                         stamp_to_ns(transform.header.stamp), transform_to_matrix(transform.transform),
                                         static=connection in static_connections)
                    except ValueError:
                        pass  # an empty frame name or a broken rotation: that sample is no ground truth
        return infos, poses, tf

    def _lookup(self, tf: TfBuffer, parent: str, child: str, stamp_ns: int) -> Optional[np.ndarray]:
        """(4, 4) parent_T_child at the stamp (interpolated, as tf2 does), None when TF cannot say."""
        try:
            return tf.lookup(parent, child, stamp_ns, tolerance_ns=self.tolerance_ns)
        except TransformError:
            return None

    def _camera_model(self, info, width: int, height: int, stamp_ns: int) -> CameraModel:
        """The camera of an image from its CameraInfo (or the pinhole override), via dsac_ros.camera."""
        if self.intrinsics_override is not None:
            k = self.intrinsics_override
            return CameraModel(k if (k.width_px, k.height_px) == (width, height) else k.resized(width, height))
        if info is None:
            raise RecordingError(f"{self.path}: missing intrinsics: no CameraInfo on {self.camera_info_topic!r}")
        try:
            return camera_model_from_info(info, image_size=(width, height))
        except CameraInfoError as error:
            if "uncalibrated" in str(error):
                raise RecordingError(f"{self.path}: missing intrinsics: CameraInfo at {stamp_ns} ns is uncalibrated "
                                     "(k[0] == 0)") from None
            raise RecordingError(f"{self.path}: CameraInfo on {self.camera_info_topic!r} at {stamp_ns} ns for images "
                                 f"on {self.image_topic!r}: {error}") from None

    def _decode_image(self, message, stamp_ns: int) -> np.ndarray:
        try:
            if self.image_type == COMPRESSED_TYPE:
                return images.decode_compressed(message.format, message.data)
            return images.decode_image(message.encoding, message.height, message.width, message.step,
                                       bool(message.is_bigendian), message.data, copy=True)
        except images.ImageDecodeError as error:
            raise RecordingError(f"{self.path}: image on {self.image_topic!r} at {stamp_ns} ns: {error}") from None

    def _decode_depth(self, message, stamp_ns: int) -> np.ndarray:
        try:
            if hasattr(message, "format"):
                return images.decode_compressed_depth(message.format, message.data)
            return images.decode_depth(message.encoding, message.height, message.width, message.step,
                                       bool(message.is_bigendian), message.data)
        except images.ImageDecodeError as error:
            raise RecordingError(f"{self.path}: depth on {self.depth_topic!r} at {stamp_ns} ns: {error}") from None

    def __iter__(self) -> Iterator[Frame]:
        infos, poses, tf = self._read_small_topics()
        image_connections = self._connections(self.image_topic)
        depth_connections = self._connections(self.depth_topic)
        pending_images: deque = deque()
        pending_depths = _StampIndex()
        latest_depth_ns = -1
        max_pending = 64  # images waiting for a depth match; bounds memory if depth is missing
        undistorter = Undistorter()

        def emit(stamp_ns: int, message) -> Frame:
            image = self._decode_image(message, stamp_ns)
            height, width = image.shape[:2]
            camera = self._camera_model(infos.nearest(stamp_ns, None), width, height, stamp_ns)
            # The same undistortion as the node's: maps and queries see the same pinhole images.
            image = undistorter.undistort_rgb(image, camera)
            intrinsics = camera.intrinsics
            depth = None
            depth_message = pending_depths.nearest(stamp_ns, self.tolerance_ns)
            if depth_message is not None:
                depth = self._decode_depth(depth_message, stamp_ns)
                if depth.shape != (height, width):
                    raise RecordingError(
                        f"{self.path}: depth on {self.depth_topic!r} is {depth.shape[1]}x{depth.shape[0]}, images are "
                        f"{width}x{height} (depth must be registered to the image; pass depth_topic=None to ignore it)")
                depth = undistorter.undistort_depth(depth, camera)
            camera_frame = self.tf_child or message.header.frame_id
            pose = None
            entry = poses.nearest(stamp_ns, self.tolerance_ns)
            if entry is not None:
                pose, body = entry
                if body is not None and body != camera_frame:
                    body_T_camera = self._lookup(tf, body, camera_frame, stamp_ns)
                    pose = None if body_T_camera is None else pose @ body_T_camera
            if pose is None and entry is None:
                pose = self._lookup(tf, self.tf_parent, camera_frame, stamp_ns)
            # Depth messages older than this image can match no later image.
            while pending_depths.stamps and pending_depths.stamps[0] < stamp_ns - self.tolerance_ns:
                pending_depths.stamps.pop(0)
                pending_depths.values.pop(0)
            return Frame(image, intrinsics, stamp_ns, depth, None if pose is None else pose.copy(),
                         f"{self.image_topic}@{stamp_ns}")

        image_ids = {c.id for c in image_connections}
        for connection, message in self._messages(image_connections + depth_connections):
            stamp_ns = stamp_to_ns(message.header.stamp)
            if connection.id in image_ids and connection.topic == self.image_topic:
                pending_images.append((stamp_ns, message))
            else:
                pending_depths.add(stamp_ns, message)
                latest_depth_ns = max(latest_depth_ns, stamp_ns)
            while pending_images and (not depth_connections or len(pending_images) > max_pending
                                      or latest_depth_ns >= pending_images[0][0] + self.tolerance_ns):
                yield emit(*pending_images.popleft())
        while pending_images:
            yield emit(*pending_images.popleft())
