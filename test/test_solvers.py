"""Minimal solvers, refinement, implicit gradients and covariance of dsac_ros.solvers."""

import numpy as np
import pytest
import torch

from dsac_ros import refinement, solvers
from dsac_ros.geometry import project_points, rotation_from_axis_angle
from tolerances import check_below

# One torch thread per module (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAMERA = (500.0, 505.0, 321.3, 238.9)
K = np.array([[500.0, 0, 321.3], [0, 505.0, 238.9], [0, 0, 1]])


def random_pose(rng):
    """cam_T_world as float64 tensors (R (3, 3), t (3,))."""
    R = torch.from_numpy(rotation_from_axis_angle(rng.normal(size=3)))
    return R, torch.from_numpy(rng.uniform(-2, 2, size=3))


def scene(rng, n, R, t, noise_px=0.0):
    """n world points in front of the camera (2..6 m) and their (noisy) pixels."""
    pixels = np.stack([rng.uniform(0, 640, n), rng.uniform(0, 480, n)], -1)
    depth = rng.uniform(2, 6, n)
    cam = np.stack([(pixels[:, 0] - CAMERA[2]) / CAMERA[0] * depth, (pixels[:, 1] - CAMERA[3]) / CAMERA[1] * depth, depth], -1)
    world = (cam - t.numpy()) @ R.numpy()  # R^T (cam - t)
    pixels = pixels + rng.normal(0, noise_px, size=pixels.shape) if noise_px else pixels
    return torch.from_numpy(pixels), torch.from_numpy(world)


def test_so3_exp_matches_rodrigues_and_has_finite_gradient_at_zero():
    rng = np.random.default_rng(0)
    for v in [rng.normal(size=3), np.array([1e-6, 0, 0]), np.array([0, np.pi - 1e-3, 0])]:
        np.testing.assert_allclose(solvers.so3_exp(torch.from_numpy(v)).numpy(), rotation_from_axis_angle(v), atol=1e-12)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    solvers.so3_exp(w)[0, 1].backward()
    assert torch.isfinite(w.grad).all() and w.grad[2] == -1.0  # d R01 / d wz at 0 is -1


def test_p3p_finds_the_true_pose_among_its_solutions():
    rng = np.random.default_rng(1)
    B = 300
    Rs, ts, bearings, worlds = [], [], [], []
    for _ in range(B):
        R, t = random_pose(rng)
        pix, world = scene(rng, 3, R, t)
        Rs.append(R), ts.append(t), worlds.append(world)
        bearings.append(solvers.bearings_from_pixels(pix, CAMERA))
    R_true, t_true = torch.stack(Rs), torch.stack(ts)
    R_sol, t_sol, valid = solvers.p3p(torch.stack(bearings), torch.stack(worlds))
    assert R_sol.shape == (B, 4, 3, 3) and valid.shape == (B, 4)
    err = (R_sol - R_true[:, None]).abs().amax((-1, -2)) + (t_sol - t_true[:, None]).abs().amax(-1)
    err = torch.where(valid, err, torch.full_like(err, np.inf))
    assert (err.amin(-1) < 1e-8).float().mean() >= 0.995
    # every valid solution reproduces the three points exactly
    for b in range(5):
        for k in range(4):
            if valid[b, k]:
                cam = worlds[b] @ R_sol[b, k].T + t_sol[b, k]
                np.testing.assert_allclose((cam / cam.norm(dim=-1, keepdim=True)).numpy(), bearings[b].numpy(), atol=1e-8)


def test_p3p_rejects_degenerate_sets_without_nan():
    rng = np.random.default_rng(2)
    bearings = solvers.bearings_from_pixels(torch.from_numpy(rng.uniform(0, 500, (4, 3, 2))), CAMERA)
    worlds = torch.stack([
        torch.zeros(3, 3, dtype=torch.float64),  # identical points
        torch.tensor([[0.0, 0, 3], [1, 1, 4], [2, 2, 5]], dtype=torch.float64),  # collinear
        torch.full((3, 3), float("nan"), dtype=torch.float64),
        torch.tensor([[0.0, 0, 3], [0, 0, 3], [1, 0, 4]], dtype=torch.float64),  # two identical
    ])
    R, t, valid = solvers.p3p(bearings, worlds)
    assert not valid.any()
    assert torch.isfinite(R).all() and torch.isfinite(t).all()


def test_reprojection_residuals_match_numpy_projection_and_clamp_behind_camera():
    rng = np.random.default_rng(3)
    R, t = random_pose(rng)
    pix, world = scene(rng, 50, R, t, noise_px=3.0)
    cam = world.numpy() @ R.numpy().T + t.numpy()
    expected = np.linalg.norm(project_points(cam, K) - pix.numpy(), axis=1)
    res = solvers.reprojection_residuals(R[None], t[None], pix, world, CAMERA, 100.0)[0]
    np.testing.assert_allclose(res.numpy(), np.minimum(expected, 100.0), atol=1e-9)
    # the same points behind the camera: every residual is the clamp
    R_flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)) @ R
    t_flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)) @ t
    res = solvers.reprojection_residuals(R_flip[None], t_flip[None], pix, world, CAMERA, 100.0)
    assert torch.all(res == 100.0)


def test_refine_pnp_reaches_the_least_squares_optimum_of_the_inliers():
    rng = np.random.default_rng(4)
    R, t = random_pose(rng)
    pix, world = scene(rng, 400, R, t, noise_px=1.0)
    outliers = torch.arange(400) < 100
    pix[outliers] = torch.from_numpy(rng.uniform(0, 640, (100, 2)))
    # start ~0.4 deg / 3 cm away (most inliers within 10 px), batched with a start at the truth
    R0 = torch.stack([solvers.so3_exp(torch.tensor([0.006, -0.004, 0.002], dtype=torch.float64)) @ R, R])
    t0 = torch.stack([t + torch.tensor([0.02, -0.01, 0.02], dtype=torch.float64), t])
    # Converged means stationary to the relative-gradient tolerance, not an iteration count.
    result = refinement.refine_pnp(R0, t0, pix, world, CAMERA, 10.0, 100, gradient_tolerance=1e-10)
    assert result.converged.all() and result.iterations < 100
    for b in range(2):
        inl = result.inlier_mask[b]
        # a random outlier pixel may land within 10 px of the true projection by chance
        assert inl[outliers].float().mean() < 0.05 and inl[~outliers].float().mean() > 0.99
        # optimality: J^T r = 0 on the inliers
        cam = world[inl] @ result.R[b].T + result.t[b]
        proj, _ = solvers.project(cam, CAMERA)
        J = refinement._projection_jacobian(cam, CAMERA)
        gradient = torch.einsum("nki,nk->i", J, proj - pix[inl])
        scale = torch.einsum("nki,nk->i", J.abs(), (proj - pix[inl]).abs())
        # The solver stops at <= 1e-10 by its own sums; recomputing them in another order differs by
        # about N eps (1e-13), so 1e-9 holds on any machine while a 1e-8 absolute-step stop does not.
        check_below("refine_pnp relative gradient", (gradient.abs() / scale).max(), 1e-9)
        np.testing.assert_allclose(result.R[b].numpy(), R.numpy(), atol=2e-3)


def test_kabsch_and_three_point_fit_recover_a_rigid_transform():
    rng = np.random.default_rng(5)
    R, t = random_pose(rng)
    world = torch.from_numpy(rng.normal(size=(20, 3)))
    cam = world @ R.T + t
    R3, t3, ok3 = solvers.rigid_from_three_points(world[None, :3], cam[None, :3])
    assert ok3.all()
    np.testing.assert_allclose(R3[0].numpy(), R.numpy(), atol=1e-10)
    np.testing.assert_allclose(t3[0].numpy(), t.numpy(), atol=1e-10)
    weights = torch.ones(2, 20, dtype=torch.float64)
    weights[1, :10] = 0.0
    cam_noisy = cam.clone()
    cam_noisy[:10] += 5.0  # outliers, zero-weighted in the second batch entry
    Rk, tk, ok = solvers.kabsch(world, cam_noisy, weights)
    assert ok.all() and torch.det(Rk[0]) > 0
    np.testing.assert_allclose(Rk[1].numpy(), R.numpy(), atol=1e-10)
    # collinear points cannot be aligned by the minimal solver
    line = torch.tensor([[0.0, 0, 0], [1, 1, 1], [2, 2, 2]], dtype=torch.float64)
    assert not solvers.rigid_from_three_points(line[None], line[None])[2].any()


def test_minimal_set_implicit_step_keeps_the_value_and_matches_finite_differences():
    rng = np.random.default_rng(6)
    R, t = random_pose(rng)
    pix, world = scene(rng, 3, R, t)
    bearings = solvers.bearings_from_pixels(pix, CAMERA)

    def solve(world_points):
        R_s, t_s, valid = solvers.p3p(bearings[None], world_points[None])
        err = (R_s[0] - R).abs().amax((-1, -2)) + torch.where(valid[0], 0.0, np.inf)
        k = int(err.argmin())
        return R_s[0, k], t_s[0, k]

    R0, t0 = solve(world)
    Y = world.clone().requires_grad_(True)
    R1, t1 = refinement.minimal_set_implicit_step(R0[None], t0[None], pix[None], Y[None], CAMERA, float("inf"))
    np.testing.assert_allclose(R1[0].detach().numpy(), R0.numpy(), atol=1e-12)
    direction = torch.from_numpy(rng.normal(size=(3, 3)))
    objective = lambda R_, t_: (R_ * torch.arange(9.0, dtype=torch.float64).reshape(3, 3)).sum() + t_.sum()  # noqa: E731
    objective(R1[0], t1[0]).backward()
    eps = 1e-6
    fd = (objective(*solve(world + eps * direction)) - objective(*solve(world - eps * direction))) / (2 * eps)
    assert float((Y.grad * direction).sum()) == pytest.approx(float(fd), rel=1e-6)


def test_pose_covariance_matches_the_scatter_of_repeated_estimates():
    rng = np.random.default_rng(7)
    R, t = random_pose(rng)
    clean_pix, world = scene(rng, 200, R, t)
    world_T_cam = torch.eye(4, dtype=torch.float64)
    world_T_cam[:3, :3], world_T_cam[:3, 3] = R.T, -R.T @ t
    estimates = []
    for _ in range(150):
        pix = clean_pix + torch.from_numpy(rng.normal(0, 1.0, size=clean_pix.shape))
        res = refinement.refine_pnp(R[None], t[None], pix, world, CAMERA, 10.0, 50)
        R_wc, c = res.R[0].T, -res.R[0].T @ res.t[0]
        # world-frame rotation error: R_wc = exp(theta) R_wc_true
        delta = R_wc @ R
        theta = torch.stack([delta[2, 1] - delta[1, 2], delta[0, 2] - delta[2, 0], delta[1, 0] - delta[0, 1]]) / 2
        estimates.append(torch.cat([c - world_T_cam[:3, 3], theta]).numpy())
    empirical = np.cov(np.array(estimates).T)
    predicted = refinement.pose_covariance(world_T_cam, clean_pix + torch.from_numpy(rng.normal(0, 1.0, size=clean_pix.shape)),
                                        world, CAMERA, torch.ones(200, dtype=torch.bool)).numpy()
    assert np.all(np.isfinite(predicted)) and np.allclose(predicted, predicted.T)
    ratio = np.diag(predicted) / np.diag(empirical)
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_pose_covariance_of_degenerate_input_is_finite_and_large():
    world = torch.zeros(10, 3, dtype=torch.float64)
    world[:, 2] = 3.0  # all points identical
    cov = refinement.pose_covariance(torch.eye(4, dtype=torch.float64), torch.full((10, 2), 300.0, dtype=torch.float64),
                                  world, CAMERA, torch.ones(10, dtype=torch.bool))
    assert torch.isfinite(cov).all() and (cov.diagonal() > 1.0).all()
