"""The classical baseline of bench/ (dsac_ros.benchmarks.classical): SIFT + retrieval + PoseLib."""

from __future__ import annotations

import numpy as np
import pytest

from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import pose_errors

# poselib is a dev dependency (requirements-dev.txt, installed by make setup): a missing one fails
# here, as in test_benchmarks_ransac, instead of skipping.


@pytest.fixture(scope="module")
def frames():
    """Every 6th small_room mapping frame at 640 x 480: even ones map, odd ones are queries
    between them (six frames of the recording from the nearest mapped view)."""
    return list(get_scene("small_room").render_frames("mapping", 640, 480, stride=6))[:24]


@pytest.mark.parametrize("mode", ["rgbd", "rgb"])
def test_the_baseline_reproduces_known_poses_of_rendered_frames(frames, mode):
    """Noise-free renders: measured errors 0.3-1.1 cm (rgbd, all five) and 0.3-1.4 cm (rgb, four of
    five; the fifth 3.4 cm / 0.85 deg, with 28 inliers). Asserted: four of five within 2 cm / 1 deg
    (rgbd) or 3 cm / 1 deg (rgb, triangulated points are less exact)."""
    from dsac_ros.benchmarks.classical import build_map, localize

    classical = build_map(frames[0::2], mode)
    assert classical.points > 1000 and len(classical.descriptors) == 12
    assert all(len(d) == len(p) for d, p in zip(classical.descriptors, classical.points_world))
    good = 0
    for query in frames[1::2][:5]:
        world_T_cam, info = localize(classical, query.image_rgb, query.intrinsics, retrieve=3)
        assert set(info["ms"]) == {"sift", "retrieve", "match", "pnp", "total"}
        if world_T_cam is not None:
            translation_m, rotation_deg = pose_errors(world_T_cam, query.world_T_cam)
            good += translation_m < (0.02 if mode == "rgbd" else 0.03) and rotation_deg < 1.0
    assert good >= 4, good


def test_rgb_triangulation_puts_points_where_the_depth_says(frames):
    """Triangulated points against the same keypoints lifted with the rendered depth: the rgb
    map's points are the scene's, within a few millimetres for most."""
    from dsac_ros.benchmarks.classical import _lift_rgbd, _triangulate_rgb, sift

    subset = frames[0::2]
    features = [sift(frame.image_rgb) for frame in subset]
    valid_rgb, points_rgb = _triangulate_rgb(subset, features, 3, partners=4)
    valid_d, points_d = _lift_rgbd(subset[3], features[3][0])
    both = valid_rgb & valid_d
    assert both.sum() > 100
    lifted = np.full((len(valid_d), 3), np.nan)
    lifted[valid_d] = points_d
    triangulated = np.full((len(valid_rgb), 3), np.nan)
    triangulated[valid_rgb] = points_rgb
    errors = np.linalg.norm(triangulated[both] - lifted[both], axis=1)
    assert np.median(errors) < 0.02 and np.mean(errors < 0.05) > 0.8, (np.median(errors), np.mean(errors < 0.05))
