"""Pose losses of DSAC (max deg/cm) and DSAC* (deg + 100 m with soft clamp)."""

import numpy as np
import pytest
import torch

from dsac_ros.geometry import rotation_angle_deg, rotation_from_axis_angle
from dsac_ros.pose_loss import cam_T_world_to_centre, pose_loss, rotation_error_deg, translation_error_m
from dsac_ros.solvers import so3_exp


def rot(v):
    return torch.from_numpy(rotation_from_axis_angle(np.asarray(v, dtype=np.float64)))


def test_rotation_error_matches_numpy_geometry_including_small_and_large_angles():
    rng = np.random.default_rng(0)
    for v in [rng.normal(size=3), [1e-7, 0, 0], [0, 0, np.pi - 1e-4], [0.3, -0.2, 0.1]]:
        R_est, R_gt = rot(v), rot(rng.normal(size=3) * 0.0)
        expected = rotation_angle_deg(R_est.numpy().T @ R_gt.numpy())
        assert float(rotation_error_deg(R_est, R_gt)) == pytest.approx(float(expected), abs=1e-6)


def test_dsacstar_loss_is_deg_plus_100_m_below_the_clamp_and_sqrt_above():
    R_gt, c_gt = rot([0, 0, 0]), torch.zeros(3, dtype=torch.float64)
    R_est = rot([0, 0, np.radians(2.0)])
    c_small = torch.tensor([0.1, 0, 0], dtype=torch.float64)  # 2 deg + 10 -> 12
    assert float(pose_loss(R_est, c_small, R_gt, c_gt)) == pytest.approx(12.0, rel=1e-9)
    c_big = torch.tensor([3.98, 0, 0], dtype=torch.float64)  # 2 + 398 = 400 -> sqrt(100 * 400) = 200
    assert float(pose_loss(R_est, c_big, R_gt, c_gt)) == pytest.approx(200.0, rel=1e-9)
    # continuous at the clamp
    c_edge = torch.tensor([0.98, 0, 0], dtype=torch.float64)
    below = pose_loss(R_est, c_edge - 1e-9, R_gt, c_gt)
    above = pose_loss(R_est, c_edge + 1e-9, R_gt, c_gt)
    assert float(above - below) == pytest.approx(0.0, abs=1e-6)


def test_max_deg_cm_loss_takes_the_larger_error():
    R_gt, c_gt = rot([0, 0, 0]), torch.zeros(3, dtype=torch.float64)
    R_est = rot([np.radians(3.0), 0, 0])
    assert float(pose_loss(R_est, torch.tensor([0.01, 0, 0], dtype=torch.float64), R_gt, c_gt, "max_deg_cm")) == pytest.approx(3.0)
    assert float(pose_loss(R_est, torch.tensor([0, 0.07, 0], dtype=torch.float64), R_gt, c_gt, "max_deg_cm")) == pytest.approx(7.0)
    with pytest.raises(ValueError):
        pose_loss(R_est, c_gt, R_gt, c_gt, "l2")


@pytest.mark.parametrize("kind", ["dsacstar", "max_deg_cm"])
def test_loss_gradients_are_finite_at_zero_error_and_in_the_clamped_region(kind):
    for v, c in [([0, 0, 0], [0, 0, 0]), ([0.5, 0.1, 0], [5.0, 0, 0])]:
        w = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        c_est = torch.tensor(c, dtype=torch.float64, requires_grad=True)
        loss = pose_loss(so3_exp(w), c_est, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), kind)
        loss.backward()
        assert torch.isfinite(w.grad).all() and torch.isfinite(c_est.grad).all()


def test_clamped_region_gradient_is_the_true_derivative():
    R = torch.eye(3, dtype=torch.float64)
    c = torch.tensor([2.0, 0, 0], dtype=torch.float64, requires_grad=True)  # loss 200 -> sqrt(100 * 200)
    pose_loss(R, c, R, torch.zeros(3, dtype=torch.float64)).backward()
    # d sqrt(100 * 100 x) / dx = 0.5 * 100 * 100 / sqrt(100 * 100 x) at x = 2
    assert float(c.grad[0]) == pytest.approx(0.5 * 1e4 / np.sqrt(2e4), rel=1e-9)


def test_centre_conversion_and_translation_error():
    R_cw = rot([0.2, -0.1, 0.3])
    t_cw = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    R_wc, c = cam_T_world_to_centre(R_cw, t_cw)
    np.testing.assert_allclose((R_cw @ c + t_cw).numpy(), np.zeros(3), atol=1e-12)  # centre maps to the origin
    assert float(translation_error_m(c, c + torch.tensor([0.0, 3.0, 4.0], dtype=torch.float64))) == pytest.approx(5.0)
