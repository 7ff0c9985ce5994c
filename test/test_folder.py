"""Folder recordings: rendering -> folder -> reader round trip, 7-Scenes-style layouts, clear errors."""

import cv2
import numpy as np
import pytest

from dsac_ros.data import RecordingError, count_frames, read_frames, write_folder
from dsac_ros.data.scenes import get_scene


@pytest.fixture(scope="module")
def frames():
    return list(get_scene("tiny").render_frames("mapping", stride=4))


def test_round_trip_identical(frames, tmp_path):
    assert write_folder(frames, tmp_path / "rec") == len(frames)
    assert count_frames(tmp_path / "rec") == len(frames)
    back = list(read_frames(tmp_path / "rec"))
    assert len(back) == len(frames)
    for original, read in zip(frames, back):
        np.testing.assert_array_equal(read.image_rgb, original.image_rgb)
        np.testing.assert_allclose(read.depth_m, original.depth_m, atol=5e-4 + 1e-6)  # 1 mm PNG steps
        np.testing.assert_array_equal(read.world_T_cam, original.world_T_cam)
        assert read.intrinsics == original.intrinsics
        assert read.stamp_ns == original.stamp_ns


def test_write_refuses_a_folder_with_frames(frames, tmp_path):
    write_folder(frames[:1], tmp_path)
    with pytest.raises(FileExistsError):
        write_folder(frames[:1], tmp_path)


def write_7scenes_like(directory, names, size=(8, 6), depth_value=1500):
    directory.mkdir(parents=True)
    for i, name in enumerate(names):
        image = np.full((size[1], size[0], 3), i * 10, np.uint8)
        cv2.imwrite(str(directory / f"{name}.color.png"), image)
        depth = np.full((size[1], size[0]), depth_value, np.uint16)
        depth[0, 0] = 65535
        cv2.imwrite(str(directory / f"{name}.depth.png"), depth)
        pose = np.eye(4)
        pose[0, 3] = i
        np.savetxt(directory / f"{name}.pose.txt", pose)


def test_sequences_numeric_order_and_simple_intrinsics(tmp_path):
    write_7scenes_like(tmp_path / "seq-2", ["frame-2", "frame-10", "frame-1"])
    write_7scenes_like(tmp_path / "seq-10", ["frame-0"])
    (tmp_path / "intrinsics.txt").write_text("585 585 320 240\n")
    back = list(read_frames(tmp_path))
    assert [f.name for f in back] == ["seq-2/frame-1", "seq-2/frame-2", "seq-2/frame-10", "seq-10/frame-0"]
    assert [f.world_T_cam[0, 3] for f in back] == [2.0, 0.0, 1.0, 0.0]
    assert back[0].intrinsics.as_tuple() == (585.0, 585.0, 320.0, 240.0)
    assert back[0].depth_m[0, 0] == 0.0 and back[0].depth_m[1, 1] == pytest.approx(1.5)


def test_missing_intrinsics_is_named(tmp_path):
    write_7scenes_like(tmp_path / "rec", ["frame-000000"])
    with pytest.raises(RecordingError, match="missing intrinsics"):
        list(read_frames(tmp_path / "rec"))


def test_corrupt_image_is_named(tmp_path):
    write_7scenes_like(tmp_path / "rec", ["frame-000000"])
    (tmp_path / "rec" / "intrinsics.txt").write_text("1 0 4\n0 1 3\n0 0 1\n")
    colour = tmp_path / "rec" / "frame-000000.color.png"
    colour.write_bytes(colour.read_bytes()[:20])
    with pytest.raises(RecordingError, match="frame-000000.color.png: corrupt"):
        list(read_frames(tmp_path / "rec"))


def test_bad_pose_file_and_empty_folder(tmp_path):
    write_7scenes_like(tmp_path / "rec", ["frame-000000"])
    (tmp_path / "rec" / "intrinsics.txt").write_text("1 1 4 3\n")
    (tmp_path / "rec" / "frame-000000.pose.txt").write_text("1 0 0\n")
    with pytest.raises(RecordingError, match="pose.txt: expected 4x4"):
        list(read_frames(tmp_path / "rec"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="no frames found"):
        read_frames(tmp_path / "empty")
