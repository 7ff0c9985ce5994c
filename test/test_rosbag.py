"""rosbag2 recordings: rendering -> bag -> reader round trips, association, TF, clear errors."""

import os
import shutil

import numpy as np
import pytest

from dsac_ros.data import RecordingError, count_frames, read_frames, write_bag
from dsac_ros.data.rosbag import (BAG_TF_CACHE_S, CAMERA_INFO_TYPE, IMAGE_TYPE, BagTopics,
                                  _MessageFactory, _typestore)
from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import rotation_from_axis_angle
from dsac_ros.tf_tree import TfBuffer, TransformError


@pytest.fixture(scope="module")
def frames():
    return list(get_scene("tiny").render_frames("mapping", stride=3))


@pytest.fixture(scope="module")
def mcap_bag(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "tiny"
    write_bag(frames, path)
    return path


def assert_same_frames(originals, read, pose_atol=1e-12):
    assert len(read) == len(originals)
    for original, back in zip(originals, read):
        np.testing.assert_array_equal(back.image_rgb, original.image_rgb)
        np.testing.assert_array_equal(back.depth_m, original.depth_m)
        np.testing.assert_allclose(back.world_T_cam, original.world_T_cam, atol=pose_atol)
        assert back.intrinsics == original.intrinsics
        assert back.stamp_ns == original.stamp_ns


def test_mcap_round_trip(frames, mcap_bag):
    assert count_frames(mcap_bag) == len(frames)
    assert_same_frames(frames, list(read_frames(mcap_bag)))
    # The single .mcap file inside the bag directory reads the same.
    assert_same_frames(frames, list(read_frames(next(mcap_bag.glob("*.mcap")))))


def test_sqlite3_round_trip(frames, tmp_path):
    write_bag(frames, tmp_path / "bag", storage="sqlite3")
    assert any(p.suffix == ".db3" for p in (tmp_path / "bag").iterdir())
    assert_same_frames(frames, list(read_frames(tmp_path / "bag")))


def test_ground_truth_from_tf_when_pose_topic_absent(frames, tmp_path):
    write_bag(frames, tmp_path / "bag", topics=BagTopics(pose=None))
    assert_same_frames(frames, list(read_frames(tmp_path / "bag")))
    # A TF child that does not exist gives frames without ground truth rather than a wrong pose.
    assert all(f.world_T_cam is None for f in read_frames(tmp_path / "bag", tf_child="nowhere"))


def test_compressed_images(frames, tmp_path):
    write_bag(frames, tmp_path / "bag", image_format="png")
    back = list(read_frames(tmp_path / "bag"))
    for original, read in zip(frames, back):
        np.testing.assert_array_equal(read.image_rgb, original.image_rgb)


def test_configurable_topics_and_missing_image_topic(frames, tmp_path):
    topics = BagTopics(image="/cam/rgb", camera_info="/cam/info", depth="/cam/depth")
    write_bag(frames[:2], tmp_path / "bag", topics=topics)
    with pytest.raises(RecordingError, match=r"no image topic '/camera/image_raw'.*/cam/rgb \(sensor_msgs/msg/Image\)"):
        read_frames(tmp_path / "bag")
    back = list(read_frames(tmp_path / "bag", image_topic="/cam/rgb", camera_info_topic="/cam/info",
                            depth_topic="/cam/depth"))
    assert_same_frames(frames[:2], back)


def test_missing_camera_info_is_named(frames, tmp_path):
    write_bag(frames[:2], tmp_path / "bag", topics=BagTopics(camera_info=None))
    with pytest.raises(RecordingError, match="missing intrinsics"):
        read_frames(tmp_path / "bag")
    back = list(read_frames(tmp_path / "bag", intrinsics=frames[0].intrinsics))
    assert back[0].intrinsics == frames[0].intrinsics


def write_custom_bag(path, stamps_image, stamps_depth, encoding="rgb8"):
    """A tiny bag with hand-made messages: 4x3 images, depth 2.0 m, chosen stamps and encoding."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dsac_ros.camera import Intrinsics

    typestore = _typestore()
    make = _MessageFactory(typestore)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image_conn = writer.add_connection("/camera/image_raw", IMAGE_TYPE, typestore=typestore)
        info_conn = writer.add_connection("/camera/camera_info", CAMERA_INFO_TYPE, typestore=typestore)
        depth_conn = writer.add_connection("/camera/depth/image_raw", IMAGE_TYPE, typestore=typestore)
        intrinsics = Intrinsics(5.0, 5.0, 1.5, 1.0, 4, 3)
        events = [(s, "image") for s in stamps_image] + [(s, "depth") for s in stamps_depth]
        for stamp, kind in sorted(events):
            header = make.header(stamp, "camera_optical_frame")
            if kind == "image":
                writer.write(info_conn, stamp, typestore.serialize_cdr(make.camera_info(header, intrinsics), CAMERA_INFO_TYPE))
                msg = make.image(header, 3, 4, encoding, 12, bytes(range(36)))
                writer.write(image_conn, stamp, typestore.serialize_cdr(msg, IMAGE_TYPE))
            else:
                depth = np.full((3, 4), stamp % 1000 / 100.0 + 1.0, np.float32)
                msg = make.image(header, 3, 4, "32FC1", 16, depth.tobytes())
                writer.write(depth_conn, stamp, typestore.serialize_cdr(msg, IMAGE_TYPE))


def test_depth_associated_by_stamp_within_tolerance(tmp_path):
    second = 1_000_000_000
    images = [10 * second, 11 * second, 12 * second]
    # Depth 5 ms after the first image, 40 ms after the second, none near the third.
    depths = [10 * second + 5_000_000, 11 * second + 40_000_000]
    write_custom_bag(tmp_path / "bag", images, depths)
    back = list(read_frames(tmp_path / "bag", stamp_tolerance_s=0.02))
    assert [f.stamp_ns for f in back] == images
    assert back[0].depth_m is not None and back[1].depth_m is None and back[2].depth_m is None
    back = list(read_frames(tmp_path / "bag", stamp_tolerance_s=0.05))
    assert back[1].depth_m is not None


def test_unknown_encoding_is_named(tmp_path):
    write_custom_bag(tmp_path / "bag", [1_000_000_000], [], encoding="yuv422")
    with pytest.raises(RecordingError, match="unknown image encoding 'yuv422'"):
        list(read_frames(tmp_path / "bag"))


def test_truncated_bag_is_named(mcap_bag, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(mcap_bag, damaged)
    mcap_file = next(damaged.glob("*.mcap"))
    os.truncate(mcap_file, mcap_file.stat().st_size // 2)
    with pytest.raises(RecordingError, match="corrupt"):
        list(read_frames(damaged))


def test_tf_chains_static_and_dynamic_edges():
    # The bag reader's TF tree is the node's (dsac_ros.tf_tree), with a stamp tolerance.
    buffer = TfBuffer(cache_time_s=BAG_TF_CACHE_S)
    map_T_base = np.eye(4)
    map_T_base[:3, :3] = rotation_from_axis_angle(np.array([0.0, 0.0, 0.7]))
    map_T_base[:3, 3] = [1.0, 2.0, 0.0]
    base_T_camera = np.eye(4)
    base_T_camera[:3, :3] = rotation_from_axis_angle(np.array([-1.2, 0.0, -1.5]))
    base_T_camera[:3, 3] = [0.1, 0.0, 0.3]
    buffer.set_transform("map", "base_link", 100, map_T_base, static=False)
    buffer.set_transform("base_link", "camera_optical_frame", 0, base_T_camera, static=True)
    buffer.set_transform("map", "landmark", 100, np.eye(4), static=True)
    found = buffer.lookup("map", "camera_optical_frame", 105, tolerance_ns=10)
    np.testing.assert_allclose(found, map_T_base @ base_T_camera, atol=1e-12)
    # Between two children of a common ancestor.
    np.testing.assert_allclose(buffer.lookup("landmark", "camera_optical_frame", 100, tolerance_ns=10),
                               map_T_base @ base_T_camera, atol=1e-12)
    with pytest.raises(TransformError):  # stale dynamic edge
        buffer.lookup("map", "camera_optical_frame", 200, tolerance_ns=10)
