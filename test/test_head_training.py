"""Head training on a pixel buffer: losses, schedule, and that training actually fits."""

import math

import numpy as np
import pytest
import torch

from dsac_ros.buffer import PixelBuffer, buffer_from_features, cell_targets
from dsac_ros.camera import Intrinsics
from dsac_ros.geometry import invert_pose, make_pose, project_points, rotation_from_axis_angle, transform_points
from dsac_ros.head_training import (HeadTrainingOptions, annealed_clamp_px, coords_loss, head_forward_flat,
                                    one_cycle_lr, reprojection_loss)
from dsac_ros.network import Head

# One torch thread per module (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

INTRINSICS = Intrinsics(100.0, 100.0, 39.5, 29.5, 80, 60)


def _frame(angle_rad: float, depth_m: float = 2.0):
    world_T_cam = make_pose(rotation_from_axis_angle([0.0, angle_rad, 0.0]), [0.3 * angle_rad, 0.0, 0.0])
    depth = np.full((60, 80), depth_m, dtype=np.float32)
    depth[:5] = 0.0  # invalid rows
    return world_T_cam, depth


def test_cell_targets_back_project_onto_their_pixels():
    world_T_cam, depth = _frame(0.2)
    pixels = np.array([[4.0, 10.0], [44.0, 36.0], [76.0, 2.0]])
    coords = cell_targets(depth, world_T_cam, INTRINSICS, pixels)
    assert np.isnan(coords[2]).all()  # row 2 is inside the invalid band
    reprojected = project_points(transform_points(invert_pose(world_T_cam), coords[:2]), INTRINSICS.K)
    np.testing.assert_allclose(reprojected, pixels[:2], atol=1e-4)


def test_buffer_rows_follow_cells_and_concatenate_frame_indices():
    parts = []
    for angle in (0.0, 0.3):
        world_T_cam, depth = _frame(angle)
        features = torch.randn(1, 8, 60 // 8 * 8 // 8, 80 // 8)
        parts.append(buffer_from_features(features, (80, 60), (80, 56), INTRINSICS, world_T_cam, depth))
    buffer = PixelBuffer.concatenate(parts)
    cells = 7 * 10
    assert len(buffer) == 2 * cells and buffer.frames == 2
    assert buffer.frame_index[:cells].eq(0).all() and buffer.frame_index[cells:].eq(1).all()
    assert not buffer.has_depth()[:10].any()  # first cell row sits in the invalid depth band
    assert buffer.has_depth()[-10:].all()


def test_flat_forward_equals_convolution_forward():
    head = Head(16, 32, 2)
    features = torch.randn(50, 16)
    expected = head(features[:, :, None, None])[:, :, 0, 0]
    torch.testing.assert_close(head_forward_flat(head, features), expected)


def test_one_cycle_schedule_warms_up_then_decays_to_minimum():
    options = HeadTrainingOptions(lr_min=1e-4, lr_max=1e-2, warmup_fraction=0.2)
    assert one_cycle_lr(0.0, options) == pytest.approx(1e-4)
    assert one_cycle_lr(0.2, options) == pytest.approx(1e-2)
    assert one_cycle_lr(1.0, options) == pytest.approx(1e-4)


def test_the_reprojection_clamp_anneals_geometrically_from_start_to_end():
    options = HeadTrainingOptions(clamp_start_px=50.0, clamp_end_px=2.0)
    assert annealed_clamp_px(0.0, options) == pytest.approx(50.0)
    assert annealed_clamp_px(0.5, options) == pytest.approx(10.0)  # sqrt(50 * 2)
    assert annealed_clamp_px(1.0, options) == pytest.approx(2.0)
    values = [one_cycle_lr(p, options) for p in np.linspace(0.2, 1.0, 20)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_coords_loss_ignores_rows_without_ground_truth():
    pred = torch.zeros(3, 3)
    target = torch.tensor([[3.0, 4.0, 0.0], [float("nan")] * 3, [0.0, 0.0, 1.0]])
    assert float(coords_loss(pred, target)) == pytest.approx(3.0)


def test_reprojection_loss_is_zero_for_exact_points_and_pulls_points_behind_the_camera():
    options = HeadTrainingOptions()
    cam_T_world = torch.eye(4).expand(2, 4, 4)
    K = torch.as_tensor(INTRINSICS.K, dtype=torch.float32).expand(2, 3, 3)
    pixels = torch.tensor([[10.0, 20.0], [50.0, 30.0]])
    depth = 2.0
    exact = torch.stack([(pixels[:, 0] - 39.5) / 100 * depth, (pixels[:, 1] - 29.5) / 100 * depth,
                         torch.full((2,), depth)], 1)
    assert float(reprojection_loss(exact, pixels, cam_T_world, K, 10.0, options)) == pytest.approx(0.0, abs=1e-5)
    behind = exact.clone().requires_grad_(True)
    with torch.no_grad():
        behind[:, 2] = -1.0
    loss = reprojection_loss(behind, pixels, cam_T_world, K, 10.0, options)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and float(loss.detach()) > 1.0
    assert (behind.grad[:, 2] < 0).all()  # gradient descent moves the points forward, towards the proxy


def _coded_buffer(frames: int = 3) -> PixelBuffer:
    """Frames whose features identify their row: a head must learn the code -> coordinate map."""
    torch.manual_seed(0)
    parts = []
    for index, angle in enumerate(np.linspace(-0.15, 0.15, frames)):
        world_T_cam, depth = _frame(float(angle), depth_m=2.0 + float(angle))
        features = torch.randn(1, 12, 7, 10)
        parts.append(buffer_from_features(features, (80, 60), (80, 56), INTRINSICS, world_T_cam, depth))
    return PixelBuffer.concatenate(parts)


def _median_reprojection_px(pred: torch.Tensor, buffer: PixelBuffer) -> float:
    frames = buffer.frame_index.long()
    cam = (buffer.cam_T_world[frames, :3, :3] @ pred.unsqueeze(-1)).squeeze(-1) + buffer.cam_T_world[frames, :3, 3]
    K = buffer.intrinsics_K[frames]
    pixels = (K[:, :2, :2] @ (cam[:, :2] / cam[:, 2:]).unsqueeze(-1)).squeeze(-1) + K[:, :2, 2]
    return float((pixels - buffer.pixels_xy).norm(dim=1).median())


def _fit(head: Head, buffer: PixelBuffer, centre: torch.Tensor, options: HeadTrainingOptions,
         steps: int = 400, batch: int = 256) -> None:
    """Plain Adam on random rows with the package's losses and schedule (the losses are what is tested
    here; mapping.train_head_stage is the resumable loop, tested in test_mapping.py)."""
    optimizer = torch.optim.Adam(head.parameters())
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        progress = step / steps
        for group in optimizer.param_groups:
            group["lr"] = one_cycle_lr(progress, options)
        rows = torch.randint(len(buffer), (batch,), generator=generator)
        pred = head_forward_flat(head, buffer.features[rows].float()) + centre
        if options.loss == "coords":
            loss = coords_loss(pred, buffer.coords_world_m[rows])
        else:
            frames = buffer.frame_index[rows].long()
            clamp = annealed_clamp_px(progress, options)
            loss = reprojection_loss(pred, buffer.pixels_xy[rows], buffer.cam_T_world[frames],
                                     buffer.intrinsics_K[frames], clamp, options)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_coords_training_fits_ground_truth_coordinates():
    buffer = _coded_buffer()
    centre = torch.tensor([0.0, 0.0, 2.0])
    head = Head(12, 64, 1)
    with torch.no_grad():
        before = float(coords_loss(head_forward_flat(head, buffer.features.float()) + centre, buffer.coords_world_m))
    _fit(head, buffer, centre, HeadTrainingOptions(loss="coords"))
    with torch.no_grad():
        after = float(coords_loss(head_forward_flat(head, buffer.features.float()) + centre, buffer.coords_world_m))
    assert after < 0.2 * before


def test_reprojection_training_needs_no_depth_and_lowers_reprojection_error():
    buffer = _coded_buffer()
    buffer.coords_world_m[:] = float("nan")  # images + poses only
    centre = torch.tensor([0.0, 0.0, 2.0])
    head = Head(12, 64, 1)
    with torch.no_grad():
        before = _median_reprojection_px(head_forward_flat(head, buffer.features.float()) + centre, buffer)
    _fit(head, buffer, centre, HeadTrainingOptions(loss="reprojection", clamp_start_px=50.0, clamp_end_px=5.0))
    with torch.no_grad():
        pred = head_forward_flat(head, buffer.features.float()) + centre
    assert _median_reprojection_px(pred, buffer) < 0.05 * before


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown head loss"):
        HeadTrainingOptions(loss="l2")
