"""Point-to-plane alignment of map points to a query's depth (dsac_ros.depth_alignment).

The scenes are planes with an exact depth image (ray-plane intersection), so the only error left
after alignment is the projective association's rounding to whole pixels on tilted planes and
float64 round-off: tolerances are a tenth of a millimetre, far below the centimetre corrections
tested, and do not depend on the BLAS or thread count.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsac_ros.camera import Intrinsics
from dsac_ros.depth_alignment import DepthAlignmentOptions, align_to_depth, surface_at
from dsac_ros.geometry import pose_errors, rotation_from_axis_angle
from fixtures_maps import tiny_memory_map_path  # noqa: F401 (fixture)

INTRINSICS = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
# A room corner seen from inside: floor (y = 0.7 m below), back wall (z = 3 m), side wall (x = 1.5 m).
CORNER = [(np.array([0.0, -1.0, 0.0]), -0.7), (np.array([0.0, 0.0, -1.0]), -3.0), (np.array([-1.0, 0.0, 0.0]), -1.5)]
WALL = CORNER[1:2]


def _rotation(axis, angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return rotation_from_axis_angle(axis / np.linalg.norm(axis) * np.radians(angle_deg))


def _pose(R: np.ndarray, c: np.ndarray) -> np.ndarray:
    world_T_cam = np.eye(4)
    world_T_cam[:3, :3], world_T_cam[:3, 3] = R, c
    return world_T_cam


def _render_depth(world_T_cam: np.ndarray, planes) -> np.ndarray:
    """(480, 640) depth of world planes n.x = d (the nearest hit in front of the camera)."""
    u, v = np.meshgrid(np.arange(640.0), np.arange(480.0))
    rays_cam = np.stack([(u - INTRINSICS.cx_px) / INTRINSICS.fx_px, (v - INTRINSICS.cy_px) / INTRINSICS.fy_px,
                         np.ones_like(u)], -1)
    R, c = world_T_cam[:3, :3], world_T_cam[:3, 3]
    rays_world = rays_cam @ R.T
    depth = np.full(u.shape, np.inf)
    for normal, offset in planes:
        denominator = rays_world @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (offset - normal @ c) / denominator
        depth = np.where((z > 0.05) & (z < depth), z, depth)
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


def _surface_points(world_T_cam: np.ndarray, depth_m: np.ndarray, step_px: int = 16) -> np.ndarray:
    """Map points: exact surface samples on a cell grid of another view (as rgbd mapping stores)."""
    rows, cols = np.mgrid[step_px // 2:480:step_px, step_px // 2:640:step_px]
    z = depth_m[rows, cols].astype(np.float64).ravel()
    x = (cols.ravel() - INTRINSICS.cx_px) / INTRINSICS.fx_px * z
    y = (rows.ravel() - INTRINSICS.cy_px) / INTRINSICS.fy_px * z
    points_cam = np.stack([x, y, z], 1)[z > 0]
    return points_cam @ world_T_cam[:3, :3].T + world_T_cam[:3, 3]


@pytest.fixture(scope="module")
def corner():
    truth = _pose(_rotation([0.2, 1.0, 0.1], 20.0), np.array([0.1, 0.0, 0.2]))
    mapping_view = _pose(_rotation([0.0, 1.0, 0.0], 28.0), np.array([0.2, 0.05, 0.05]))
    points = _surface_points(mapping_view, _render_depth(mapping_view, CORNER))
    return truth, _render_depth(truth, CORNER), points


def _perturbed(world_T_cam: np.ndarray, offset_m, angle_deg: float) -> np.ndarray:
    perturbed = world_T_cam.copy()
    perturbed[:3, :3] = _rotation([1.0, -0.5, 0.3], angle_deg) @ world_T_cam[:3, :3]
    perturbed[:3, 3] += offset_m
    return perturbed


def test_surface_normals_of_a_plane_face_the_camera():
    depth = _render_depth(np.eye(4), WALL)
    cols, rows = np.array([100, 320, 600, 0]), np.array([50, 240, 400, 240])
    points, normals, valid = surface_at(depth, INTRINSICS, cols, rows, 2)
    assert valid.tolist() == [True, True, True, False]  # the last pixel has no left neighbour
    np.testing.assert_allclose(normals[:3], [[0, 0, -1]] * 3, atol=1e-9)
    np.testing.assert_allclose(points[:3, 2], 3.0, atol=1e-5)


def test_depth_edges_are_not_surfaces():
    depth = _render_depth(np.eye(4), WALL)
    depth[:, 320:] = 1.0  # a step from 3 m to 1 m between columns 319 and 320
    _, _, valid = surface_at(depth, INTRINSICS, np.array([319, 321, 200]), np.array([240, 240, 240]), 2)
    assert valid.tolist() == [False, False, True]


def test_alignment_recovers_the_pose_from_centimetres_off(corner):
    truth, depth, points = corner
    start = _perturbed(truth, [0.02, -0.015, 0.01], 1.0)
    aligned = align_to_depth(start, points, depth, INTRINSICS)
    assert aligned.applied, aligned.reason
    assert aligned.constrained_directions == 6
    assert aligned.points > 500
    # From 2.7 cm / 1 deg to the association's rounding: below a millimetre and 0.05 deg.
    translation_m, rotation_deg = pose_errors(aligned.world_T_cam, truth)
    assert translation_m < 1e-3 and rotation_deg < 0.05
    assert aligned.rms_m < 1e-3


def test_wrong_points_off_the_surface_do_not_bias_it(corner):
    truth, depth, points = corner
    rng = np.random.default_rng(3)
    outliers = rng.uniform([-1.5, -1.2, 0.0], [1.5, 1.2, 3.0], size=(len(points) // 3, 3))  # a third wrong
    aligned = align_to_depth(_perturbed(truth, [0.01, 0.01, -0.02], 0.8), np.concatenate([points, outliers]),
                             depth, INTRINSICS)
    assert aligned.applied, aligned.reason
    assert np.linalg.norm(aligned.world_T_cam[:3, 3] - truth[:3, 3]) < 1.5e-3


def test_a_single_plane_leaves_the_sliding_directions_alone():
    truth = _pose(np.eye(3), np.zeros(3))
    depth = _render_depth(truth, WALL)
    points = _surface_points(_pose(np.eye(3), np.array([0.1, 0.0, 0.0])), _render_depth(
        _pose(np.eye(3), np.array([0.1, 0.0, 0.0])), WALL))
    start = _perturbed(truth, [0.02, 0.01, 0.015], 0.0)
    aligned = align_to_depth(start, points, depth, INTRINSICS)
    assert aligned.applied, aligned.reason
    assert aligned.constrained_directions == 3  # distance to the wall, and the two tilts
    # Along the wall's normal (z) the error is gone; in its plane, DSAC's offset is kept unchanged.
    assert abs(aligned.world_T_cam[2, 3] - truth[2, 3]) < 1e-4
    np.testing.assert_allclose(aligned.world_T_cam[:2, 3], start[:2, 3], atol=1e-4)


def test_untrustworthy_alignments_keep_the_input_pose(corner):
    truth, depth, points = corner
    start = _perturbed(truth, [0.02, 0.0, 0.0], 0.5)
    few = align_to_depth(start, points[:10], depth, INTRINSICS)
    assert not few.applied and "only" in few.reason and np.array_equal(few.world_T_cam, start)
    no_depth = align_to_depth(start, points, np.zeros_like(depth), INTRINSICS)
    assert not no_depth.applied and np.array_equal(no_depth.world_T_cam, start)
    nan_points = align_to_depth(start, np.full_like(points, np.nan), depth, INTRINSICS)
    assert not nan_points.applied
    tight = align_to_depth(start, points, depth, INTRINSICS, DepthAlignmentOptions(max_correction_m=0.005))
    assert not tight.applied and "too large" in tight.reason and np.array_equal(tight.world_T_cam, start)
    disabled = align_to_depth(start, points, depth, INTRINSICS, DepthAlignmentOptions(enabled=False))
    assert not disabled.applied and disabled.reason == "disabled"


def test_options_are_checked():
    with pytest.raises(ValueError):
        DepthAlignmentOptions(robust_scale_m=0.0)
    with pytest.raises(ValueError):
        DepthAlignmentOptions(min_points=3)


def test_the_localizer_aligns_rgbd_frames_of_the_tiny_scene_beyond_the_cell_grid(tiny_memory_map_path):
    # The tiny scene's 8 test frames, localised with depth: DSAC alone is limited by the 10-px
    # cells (measured median 1.08 cm / 0.70 deg), the alignment to each frame's depth is not
    # (0.30 cm / 0.017 deg, searching 4 mapping frames instead of 8). Asserted with a factor-2
    # margin on both.
    from dsac_ros.data.scenes import get_scene
    from dsac_ros.localizer import Localizer

    localizer = Localizer(tiny_memory_map_path, device="cpu")
    errors = {True: [], False: []}
    for index, frame in enumerate(get_scene("tiny").render_frames("test")):
        for enabled in errors:
            result = localizer.localize(frame.image_rgb, frame.intrinsics, depth_m=frame.depth_m, seed=index,
                                        depth_alignment=DepthAlignmentOptions(enabled=enabled))
            assert result.success and result.depth_alignment is not None
            assert result.depth_alignment.applied == enabled and "alignment" in result.timings_ms
            errors[enabled].append(pose_errors(result.world_T_cam, frame.world_T_cam))
        rgb_only = localizer.localize(frame.image_rgb, frame.intrinsics, seed=index)
        assert rgb_only.depth_alignment is None  # nothing to align to
    dsac, aligned = np.median(errors[False], axis=0), np.median(errors[True], axis=0)
    assert aligned[0] < 0.5 * dsac[0] and aligned[1] < 0.5 * dsac[1], (dsac, aligned)


def test_rgbd_frames_search_fewer_mapping_frames_unless_told(tiny_memory_map_path):
    from dsac_ros.data.scenes import get_scene
    from dsac_ros.localizer import RGBD_RETRIEVE_FRAMES, Localizer

    frame = next(iter(get_scene("tiny").render_frames("test")))
    localizer = Localizer(tiny_memory_map_path, device="cpu")
    assert localizer.map_retrieve_frames > RGBD_RETRIEVE_FRAMES
    with_depth = localizer.localize(frame.image_rgb, frame.intrinsics, depth_m=frame.depth_m, seed=0)
    assert with_depth.success and with_depth.retrieve_frames == RGBD_RETRIEVE_FRAMES
    rgb = localizer.localize(frame.image_rgb, frame.intrinsics, seed=0)
    assert rgb.retrieve_frames == localizer.map_retrieve_frames
    # Without the alignment, or when the caller or the localizer names a number, that number holds.
    unaligned = localizer.localize(frame.image_rgb, frame.intrinsics, depth_m=frame.depth_m, seed=0,
                                   depth_alignment=DepthAlignmentOptions(enabled=False))
    assert unaligned.retrieve_frames == localizer.map_retrieve_frames
    told = localizer.localize(frame.image_rgb, frame.intrinsics, depth_m=frame.depth_m, seed=0, retrieve_frames=6)
    assert told.retrieve_frames == 6
    assert Localizer(tiny_memory_map_path, device="cpu", retrieve_frames=8).localize(
        frame.image_rgb, frame.intrinsics, depth_m=frame.depth_m, seed=0).retrieve_frames == 8
