"""The renderer: geometric consistency of depth and poses across views, conventions, determinism."""

import numpy as np
import pytest

from dsac_ros.camera import Intrinsics
from dsac_ros.data import textures as tx
from dsac_ros.data.render import SceneBuilder, depth_at_pixels, render
from dsac_ros.data.scenes import get_scene, random_scene
from dsac_ros.data.trajectories import look_rotation
from dsac_ros.geometry import invert_pose, rotation_from_axis_angle

SMALL = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480).resized(160, 120)


def scenes_and_poses():
    cases = []
    for name in ("small_room", "large_room"):
        spec = get_scene(name)
        cases.append((name, spec.scene(), spec.poses("mapping")[[0, 4, 40, 46]], spec.poses("test")[[10]]))
    scene = random_scene(7)
    from dsac_ros.data.trajectories import random_views
    view = random_views(scene, 1, seed=7)[0]
    nearby = view.copy()  # 0.15 m to the camera's right, turned 5 deg: overlaps by construction
    nearby[:3, 3] += 0.15 * view[:3, 0]
    nearby[:3, :3] = view[:3, :3] @ rotation_from_axis_angle(np.array([0.0, np.radians(5.0), 0.0]))
    cases.append(("random_7", scene, view[None], nearby[None]))
    return cases


def backproject(depth, pixels_xy, intrinsics, world_T_cam):
    x = (pixels_xy[:, 0] - intrinsics.cx_px) / intrinsics.fx_px * depth
    y = (pixels_xy[:, 1] - intrinsics.cy_px) / intrinsics.fy_px * depth
    points_cam = np.stack([x, y, depth], axis=1)
    return points_cam @ world_T_cam[:3, :3].T + world_T_cam[:3, 3]


def project(points_world, intrinsics, world_T_cam):
    cam_T_world = invert_pose(world_T_cam)
    p = points_world @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
    z = p[:, 2]
    return np.stack([intrinsics.fx_px * p[:, 0] / z + intrinsics.cx_px,
                     intrinsics.fy_px * p[:, 1] / z + intrinsics.cy_px], axis=1), z


@pytest.mark.parametrize("name,scene,poses_a,poses_b", scenes_and_poses(), ids=lambda v: v if isinstance(v, str) else "")
def test_depth_reprojects_consistently_between_views(name, scene, poses_a, poses_b):
    """A pixel's depth, back-projected with its pose, is the surface point another view sees there."""
    rng = np.random.default_rng(0)
    checked = 0
    for pose_a in poses_a:
        _, depth_a = render(scene, pose_a, SMALL)
        rows, cols = rng.integers(0, 120, 400), rng.integers(0, 160, 400)
        pixels_a = np.stack([cols, rows], axis=1).astype(np.float64)
        points = backproject(depth_a[rows, cols].astype(np.float64), pixels_a, SMALL, pose_a)
        for pose_b in list(poses_a) + list(poses_b):
            pixels_b, z_b = project(points, SMALL, pose_b)
            inside = (z_b > 0.05) & np.all((pixels_b >= 0) & (pixels_b <= [159, 119]), axis=1)
            depth_b = depth_at_pixels(scene, pose_b, SMALL, pixels_b[inside])
            visible = np.abs(depth_b - z_b[inside]) < 1e-3  # posters hang 5 mm off walls
            if visible.sum() < 20:
                continue
            seen = backproject(depth_b[visible], pixels_b[inside][visible], SMALL, pose_b)
            back_in_a, _ = project(seen, SMALL, pose_a)
            error_px = np.linalg.norm(back_in_a - pixels_a[inside][visible], axis=1)
            assert np.max(error_px) < 0.05, f"{name}: reprojection error {np.max(error_px):.3f} px"
            checked += pose_b is not pose_a
    assert checked >= 1, f"{name}: no overlapping pair of different views was checked"


def test_rendered_depth_equals_exact_ray_cast_at_pixel_centres():
    spec = get_scene("small_room")
    pose = spec.poses("test")[3]
    _, depth = render(spec.scene(), pose, SMALL)
    rows, cols = np.mgrid[0:120:7, 0:160:9]
    exact = depth_at_pixels(spec.scene(), pose, SMALL, np.stack([cols.ravel(), rows.ravel()], axis=1))
    np.testing.assert_allclose(depth[rows.ravel(), cols.ravel()], exact, rtol=2e-5)


def plain_room():
    builder = SceneBuilder("box", (3.0, 3.0, 3.0))
    floor = tx.procedural_texture("checker", 1)
    ceiling = tx.procedural_texture("plaster", 2)
    wall = tx.procedural_texture("noise", 3)
    return builder.room(floor, ceiling, [wall] * 4).build()


def facing_plus_x(height_m=1.5):
    pose = np.eye(4)
    pose[:3, :3] = look_rotation(np.array([[1.0, 0.0, 0.0]]))[0]
    pose[:3, 3] = [1.5, 1.5, height_m]
    return pose


def test_depth_is_z_depth_not_ray_length():
    """Facing a wall squarely, every pixel's depth is the wall distance, corners included."""
    narrow = Intrinsics(400.0, 400.0, 39.5, 29.5, 80, 60)  # sees only the +x wall from 1.5 m
    _, depth = render(plain_room(), facing_plus_x(), narrow)
    np.testing.assert_allclose(depth, 1.5, rtol=2e-5)


def test_optical_frame_y_points_down_and_x_right():
    intrinsics = Intrinsics(100.0, 100.0, 39.5, 29.5, 80, 60)
    pose = facing_plus_x()
    _, depth = render(plain_room(), pose, intrinsics)
    grid = np.array([[39.5, 0.0], [39.5, 59.0], [0.0, 29.5], [79.0, 29.5]])
    d = depth_at_pixels(plain_room(), pose, intrinsics, grid)
    top, bottom, left, right = backproject(d, grid, intrinsics, pose)
    assert top[2] > bottom[2]          # image row 0 looks up (world z up)
    assert left[1] > right[1]          # looking along +x, the left of the image is +y (ROS: y left)


def test_render_is_deterministic_and_textured():
    spec = get_scene("small_room")
    pose = spec.poses("mapping")[17]
    image_1, depth_1 = render(spec.scene(), pose, SMALL)
    image_2, depth_2 = render(spec.build(), pose, SMALL)  # rebuilt from scratch
    np.testing.assert_array_equal(image_1, image_2)
    np.testing.assert_array_equal(depth_1, depth_2)
    assert image_1.dtype == np.uint8 and image_1.shape == (120, 160, 3)
    assert depth_1.dtype == np.float32 and np.all(depth_1 > 0)
    assert image_1.std() > 15  # textured, not flat


def test_random_scenes_are_deterministic_and_varied():
    a, b, c = random_scene(3), random_scene(3), random_scene(4)
    np.testing.assert_array_equal(a.room_max_m, b.room_max_m)
    assert len(a.quads) == len(b.quads)
    assert not np.array_equal(a.room_max_m, c.room_max_m)
    for standard in ("small_room", "large_room"):
        assert not np.array_equal(a.room_max_m, get_scene(standard).scene().room_max_m)
