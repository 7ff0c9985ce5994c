"""Camera paths: valid, smooth, clear of geometry; test views near (not equal to) mapping views."""

import numpy as np
import pytest

from dsac_ros.data.scenes import get_scene, list_scenes, random_scene
from dsac_ros.data.trajectories import look_rotation, nearest_mapping_distance, random_views
from dsac_ros.geometry import is_valid_pose, pose_errors, rotation_from_axis_angle
from tolerances import check_below


def test_look_rotation_is_an_optical_frame():
    forward = np.array([[1.0, 0.0, 0.0], [0.3, -0.8, -0.2], [-0.5, 0.1, 0.4]])
    rotations = look_rotation(forward)
    for rotation, f in zip(rotations, forward):
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        np.testing.assert_allclose(rotation[:, 2], f / np.linalg.norm(f), atol=1e-12)  # z forward
        check_below("abs(rotation[2, 0])", abs(rotation[2, 0]), 1e-12)  # x (right) horizontal without roll
        assert rotation[2, 1] < 0  # y points down (world z up)
    # Looking along +x, image right is world -y.
    np.testing.assert_allclose(rotations[0][:, 0], [0, -1, 0], atol=1e-12)


@pytest.mark.parametrize("name", list_scenes())
def test_standard_trajectories_are_valid_and_clear_of_geometry(name):
    spec = get_scene(name)
    scene = spec.scene()
    for split in ("mapping", "test"):
        poses = spec.poses(split)
        assert len(poses) == (spec.mapping_frames if split == "mapping" else spec.test_frames)
        assert all(is_valid_pose(p) for p in poses)
        assert scene.clearance_m(poses[:, :3, 3]).min() > 0.3
        heights = poses[:, 2, 3]
        assert heights.min() > 0.8 and heights.max() < 2.0 and np.ptp(heights) > 0.2
        np.testing.assert_array_equal(poses, spec.poses(split))  # deterministic


@pytest.mark.parametrize("name", ["small_room", "large_room"])
def test_passes_are_smooth(name):
    spec = get_scene(name)
    for split in ("mapping", "test"):
        poses, passes = spec.poses(split), spec.pass_index(split)
        same_pass = passes[1:] == passes[:-1]
        step_m, step_deg = pose_errors(poses[1:], poses[:-1])
        assert step_m[same_pass].max() < 0.15
        assert step_deg[same_pass].max() < 12.0  # 120 deg/s at 10 Hz: a brisk hand-held turn
        stamps = spec.stamps_ns(split)
        assert np.all(np.diff(stamps) > 0)


@pytest.mark.parametrize("name", ["small_room", "large_room"])
def test_test_views_are_new_but_within_reach(name):
    spec = get_scene(name)
    mapping, test = spec.poses("mapping"), spec.poses("test")
    distance_m, angle_deg = nearest_mapping_distance(mapping, test)
    assert distance_m.min() > 1e-3 or angle_deg.min() > 0.1  # never a copy of a mapping frame
    assert 0.03 < np.median(distance_m) < 0.3
    assert np.median(angle_deg) < 15.0
    assert np.percentile(distance_m, 90) < 0.5


def test_nearest_mapping_distance_on_known_offsets():
    rng = np.random.default_rng(1)
    mapping = np.tile(np.eye(4), (5, 1, 1))
    mapping[:, :3, 3] = rng.uniform(-5, 5, (5, 3)) * np.array([[10, 1, 1]])  # far apart
    test = mapping.copy()
    test[:, :3, 3] += [0.0, 0.05, 0.0]
    test[:, :3, :3] = rotation_from_axis_angle(np.radians([0.0, 0.0, 10.0]))
    distance_m, angle_deg = nearest_mapping_distance(mapping, test)
    np.testing.assert_allclose(distance_m, 0.05, atol=1e-12)
    np.testing.assert_allclose(angle_deg, 10.0, atol=1e-9)


def test_nearest_prefers_similar_view_over_slightly_closer_opposite_view():
    same_place_turned = np.eye(4)
    same_place_turned[:3, :3] = rotation_from_axis_angle(np.array([0.0, np.pi, 0.0]))
    nearby_same_view = np.eye(4)
    nearby_same_view[0, 3] = 0.2
    distance_m, angle_deg = nearest_mapping_distance(np.stack([same_place_turned, nearby_same_view]), np.eye(4)[None])
    assert distance_m[0] == pytest.approx(0.2) and angle_deg[0] == pytest.approx(0.0, abs=1e-9)


def test_random_views_keep_clearance():
    scene = random_scene(11)
    poses = random_views(scene, 50, seed=11)
    assert scene.clearance_m(poses[:, :3, 3]).min() >= 0.3
    assert all(is_valid_pose(p) for p in poses)
