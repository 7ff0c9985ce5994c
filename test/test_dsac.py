"""DSAC run time (estimate_pose) and training (expected_pose_loss) on generated problems."""

import math

import numpy as np
import pytest
import torch

from dsac_ros.benchmarks.ransac import make_problem
from dsac_ros.camera import Intrinsics
from dsac_ros.dsac_training import expected_pose_loss
from dsac_ros.dsac import (RansacOptions, estimate_pose, pose_covariance, select_hypothesis,
                           soft_inlier_scores)
from dsac_ros.geometry import is_valid_pose, pose_errors
from dsac_ros.score_cnn import ScoreCNN

# One torch thread per module (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = Intrinsics(100.0, 101.0, 40.3, 30.2, 80, 60)


def tensors(problem, dtype=torch.float32):
    return (torch.from_numpy(problem.pixels_xy).to(dtype), torch.from_numpy(problem.coords_world).to(dtype),
            torch.from_numpy(problem.coords_cam).to(dtype))


# --------------------------------------------------------------------------------------------
# run time
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outlier_ratio", [0.0, 0.3, 0.6])
def test_rgb_recovers_the_pose_within_1cm_and_half_a_degree(outlier_ratio):
    problem = make_problem(np.random.default_rng(10), outlier_ratio)  # 60x80 grid, 640x480, 1 px noise
    pixels, coords, _ = tensors(problem)
    estimate, info = estimate_pose(pixels, coords, problem.intrinsics, RansacOptions(seed=1))
    assert estimate.success and estimate.reason == ""
    translation_m, rotation_deg = pose_errors(estimate.world_T_cam, problem.world_T_cam)
    assert translation_m < 0.01 and rotation_deg < 0.5
    # the inlier mask is the true inlier set up to outliers that happen to fall within tau
    assert estimate.inlier_mask[~problem.outlier].mean() > 0.99
    assert estimate.inlier_mask[problem.outlier].sum() <= 0.05 * problem.outlier.sum()
    assert estimate.inlier_count == int(estimate.inlier_mask.sum())
    assert 0 < info.hypotheses_valid <= info.hypotheses_requested == 64
    assert set(info.timings_ms) >= {"sampling", "scoring", "refinement", "total"}
    cov = estimate.covariance_6x6
    assert cov.shape == (6, 6) and np.all(np.isfinite(cov)) and np.allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)


@pytest.mark.parametrize("outlier_ratio", [0.0, 0.3, 0.6])
def test_rgbd_recovers_the_pose_within_1cm_and_half_a_degree(outlier_ratio):
    problem = make_problem(np.random.default_rng(11), outlier_ratio, cam_noise_m=0.01)
    pixels, coords, coords_cam = tensors(problem)
    estimate, _ = estimate_pose(pixels, coords, problem.intrinsics, RansacOptions(seed=2), coords_cam=coords_cam)
    assert estimate.success
    translation_m, rotation_deg = pose_errors(estimate.world_T_cam, problem.world_T_cam)
    assert translation_m < 0.01 and rotation_deg < 0.5
    assert estimate.inlier_mask[problem.outlier].sum() <= 0.05 * problem.outlier.sum()


def test_rgbd_ignores_pixels_without_depth():
    problem = make_problem(np.random.default_rng(12), 0.2, cam_noise_m=0.01)
    pixels, coords, coords_cam = tensors(problem)
    coords_cam[::3] = float("nan")
    estimate, _ = estimate_pose(pixels, coords, problem.intrinsics, RansacOptions(seed=2), coords_cam=coords_cam)
    assert estimate.success and not estimate.inlier_mask[::3].any()
    assert pose_errors(estimate.world_T_cam, problem.world_T_cam)[0] < 0.01


def test_same_seed_same_result_and_partial_nan_rows_are_ignored():
    problem = make_problem(np.random.default_rng(13), 0.5)
    pixels, coords, _ = tensors(problem)
    coords[:100] = float("nan")
    a, _ = estimate_pose(pixels, coords, problem.intrinsics, RansacOptions(seed=7))
    b, _ = estimate_pose(pixels, coords, problem.intrinsics, RansacOptions(seed=7))
    assert a.success and not a.inlier_mask[:100].any()
    np.testing.assert_array_equal(a.world_T_cam, b.world_T_cam)
    np.testing.assert_array_equal(a.inlier_mask, b.inlier_mask)


def degenerate_inputs():
    rng = np.random.default_rng(14)
    pixels = torch.from_numpy(rng.uniform(0, 640, (500, 2))).float()
    same = torch.tensor([[1.0, 2.0, 3.0]]).repeat(500, 1)
    line = torch.linspace(0, 1, 500)[:, None] * torch.tensor([[1.0, 0.5, 2.0]]) + torch.tensor([[0.0, 0.0, 3.0]])
    return {
        "identical points": (pixels, same, {"no_valid_hypothesis", "too_few_inliers"}),
        "collinear points": (pixels, line, {"no_valid_hypothesis", "too_few_inliers"}),
        "all NaN": (pixels, torch.full((500, 3), float("nan")), {"too_few_points"}),
        "three points": (pixels[:3], torch.randn(3, 3) + torch.tensor([0, 0, 5.0]), {"too_few_points"}),
        "no points": (pixels[:0], torch.zeros(0, 3), {"too_few_points"}),
        "pure noise": (pixels, torch.from_numpy(rng.uniform(-5, 5, (500, 3))).float(), {"no_valid_hypothesis", "too_few_inliers"}),
    }


@pytest.mark.parametrize("name", list(degenerate_inputs()))
def test_degenerate_input_gives_a_failure_result_not_an_exception_or_nan(name):
    pixels, coords, reasons = degenerate_inputs()[name]
    options = RansacOptions(seed=0, min_inliers=20, max_sampling_rounds=3)
    estimate, info = estimate_pose(pixels, coords, Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480), options)
    assert not estimate.success and estimate.world_T_cam is None and estimate.covariance_6x6 is None
    assert estimate.reason in reasons
    assert estimate.inlier_mask.shape == (pixels.shape[0],) and not estimate.inlier_mask.any()
    assert math.isfinite(estimate.score)
    assert all(math.isfinite(v) for v in info.timings_ms.values())


def test_wrong_shapes_and_options_raise_value_errors():
    with pytest.raises(ValueError):
        estimate_pose(torch.zeros(10, 3), torch.zeros(10, 3), (500, 500, 320, 240))
    with pytest.raises(ValueError):
        RansacOptions(score="vote")
    with pytest.raises(ValueError):
        estimate_pose(torch.zeros(10, 2), torch.zeros(10, 3), (500, 500, 320, 240), RansacOptions(score="cnn"))


def test_intrinsics_as_tuple_or_matrix_give_the_same_pose():
    problem = make_problem(np.random.default_rng(15), 0.3)
    pixels, coords, _ = tensors(problem)
    a, _ = estimate_pose(pixels, coords, problem.intrinsics, RansacOptions(seed=3))
    b, _ = estimate_pose(pixels, coords, problem.intrinsics.K, RansacOptions(seed=3))
    np.testing.assert_allclose(a.world_T_cam, b.world_T_cam, atol=1e-9)
    np.testing.assert_allclose(pose_covariance(a, pixels, coords, problem.intrinsics), a.covariance_6x6, rtol=1e-6)


def test_score_cnn_selection_runs_on_the_grid_and_a_good_hypothesis_wins():
    problem = make_problem(np.random.default_rng(16), 0.3)
    pixels, coords, _ = tensors(problem)
    torch.manual_seed(0)
    cnn = ScoreCNN()
    # A CNN that scores by the mean error-image brightness (more small errors = better): the
    # argmax is then a hypothesis with many inliers, as with the soft inlier count.
    with torch.no_grad():
        for layer in cnn.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.zero_()
                layer.bias.fill_(1.0)
        cnn.features[0].weight[:, 0, 1, 1] = -1.0
        cnn.head.weight.fill_(1.0)
    estimate, _ = estimate_pose(pixels, coords, problem.intrinsics, RansacOptions(seed=4, score="cnn"),
                                score_cnn=cnn, grid_hw=problem.grid_hw)
    assert estimate.success
    assert pose_errors(estimate.world_T_cam, problem.world_T_cam)[0] < 0.01


def test_soft_inlier_score_and_selection():
    residuals = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 100.0, 100.0, 100.0]])
    scores = soft_inlier_scores(residuals, 10.0, 0.5, 100.0)
    # 1 - sigmoid(0.5 * (0 - 10)) = 0.9933 per inlier, ~0 per outlier; alpha / N = 25
    assert scores[0].item() == pytest.approx(2 * 25 * (1 - 1 / (1 + math.exp(5))), rel=1e-4)
    assert select_hypothesis(scores) == 0
    generator = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, math.log(3.0)])  # softmax = (0.25, 0.75)
    draws = [select_hypothesis(logits, "sample", generator) for _ in range(2000)]
    assert np.mean(draws) == pytest.approx(0.75, abs=0.04)


# --------------------------------------------------------------------------------------------
# training: gradients of the expected loss
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_problem():
    """6x8 grid on an 80x60 camera, 1 px noise, 30 % outliers, 1 cm depth noise (float64)."""
    problem = make_problem(np.random.default_rng(0), 0.3, intrinsics=SMALL, grid_hw=(6, 8), stride_px=10,
                           cam_noise_m=0.01)
    return problem, *tensors(problem, torch.float64)


def directional_fd(function, Y, direction, eps=1e-6):
    with torch.no_grad():
        return (function(Y + eps * direction) - function(Y - eps * direction)).item() / (2 * eps)


# No Jacobian guard here: the check is of the exact derivative (the guard is tested separately).
EXACT = dict(hypotheses=16, seed=3, max_jacobian_entry=float("inf"))


@pytest.mark.parametrize("loss", ["dsacstar", "max_deg_cm"])
def test_expected_loss_gradient_matches_central_differences(small_problem, loss):
    problem, pixels, coords, _ = small_problem
    options = RansacOptions(**EXACT)
    Y = coords.clone().requires_grad_(True)
    value, details = expected_pose_loss(pixels, Y, SMALL, problem.world_T_cam, options, loss=loss)
    assert details["hypotheses_valid"] == 16 and torch.isfinite(value)
    # both paths carry gradient: through the probabilities (scores) and the refined poses
    probabilities, losses = details["probabilities"], details["losses"]
    constant = torch.linspace(1.0, 2.0, len(losses), dtype=torch.float64)
    grad_total, = torch.autograd.grad(value, Y, retain_graph=True)
    grad_scores, = torch.autograd.grad((probabilities * constant).sum(), Y, retain_graph=True)
    grad_refined, = torch.autograd.grad((losses * constant).sum(), Y)
    assert grad_scores.abs().max() > 0 and grad_refined.abs().max() > 0

    def run(Y_, part):
        v, d = expected_pose_loss(pixels, Y_, SMALL, problem.world_T_cam, options, loss=loss)
        return {"total": v, "scores": (d["probabilities"] * constant).sum(), "refined": (d["losses"] * constant).sum()}[part]

    rng = np.random.default_rng(1)
    for _ in range(2):
        direction = torch.from_numpy(rng.normal(size=Y.shape))
        for part, grad in (("total", grad_total), ("scores", grad_scores), ("refined", grad_refined)):
            fd = directional_fd(lambda y: run(y, part), coords, direction)
            assert float((grad * direction).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-7), part


def test_rgbd_expected_loss_gradient_matches_central_differences(small_problem):
    problem, pixels, coords, coords_cam = small_problem
    options = RansacOptions(**EXACT)
    Y = coords.clone().requires_grad_(True)
    value, details = expected_pose_loss(pixels, Y, SMALL, problem.world_T_cam, options, coords_cam=coords_cam)
    grad, = torch.autograd.grad(value, Y)
    direction = torch.from_numpy(np.random.default_rng(2).normal(size=Y.shape))
    fd = directional_fd(lambda y: expected_pose_loss(pixels, y, SMALL, problem.world_T_cam, options,
                                                     coords_cam=coords_cam)[0], coords, direction)
    assert float((grad * direction).sum()) == pytest.approx(fd, rel=1e-5)


def test_score_cnn_weights_and_coordinates_get_exact_gradients(small_problem):
    problem, pixels, coords, _ = small_problem
    torch.manual_seed(0)
    cnn = ScoreCNN(output_scale=1.0).double()
    options = RansacOptions(**EXACT, score="cnn")
    Y = coords.clone().requires_grad_(True)

    def run(Y_):
        return expected_pose_loss(pixels, Y_, SMALL, problem.world_T_cam, options, score_cnn=cnn, grid_hw=(6, 8))[0]

    value = run(Y)
    parameters = [cnn.features[0].weight, cnn.head.weight]
    grad_Y, grad_conv, grad_head = torch.autograd.grad(value, [Y, *parameters])
    for parameter, grad in zip(parameters, (grad_conv, grad_head)):
        index = tuple(int(i) for i in np.unravel_index(int(grad.abs().argmax()), grad.shape))
        eps = 1e-6
        with torch.no_grad():
            parameter[index] += eps
            plus = run(coords)
            parameter[index] -= 2 * eps
            minus = run(coords)
            parameter[index] += eps
        assert float(grad[index]) != 0.0
        assert float(grad[index]) == pytest.approx((plus - minus).item() / (2 * eps), rel=1e-5)
    direction = torch.from_numpy(np.random.default_rng(3).normal(size=Y.shape))
    assert float((grad_Y * direction).sum()) == pytest.approx(directional_fd(run, coords, direction), rel=1e-5)


def test_jacobian_guard_cuts_the_gradient_of_exploding_hypotheses(small_problem):
    problem, pixels, coords, _ = small_problem
    Y = coords.clone().requires_grad_(True)
    _, details = expected_pose_loss(pixels, Y, SMALL, problem.world_T_cam,
                                    RansacOptions(hypotheses=16, seed=3, max_jacobian_entry=0.0))
    grad, = torch.autograd.grad(details["losses"].sum(), Y)
    assert torch.all(grad == 0)  # every refined pose had its derivative cut, and nothing is NaN


def test_expected_loss_without_valid_hypotheses_is_a_connected_zero():
    Y = torch.zeros(20, 3, dtype=torch.float64, requires_grad=True)
    value, details = expected_pose_loss(torch.rand(20, 2, dtype=torch.float64) * 80, Y, SMALL, np.eye(4),
                                        RansacOptions(seed=0, max_sampling_rounds=2))
    assert details["reason"] == "no_valid_hypothesis" and value.item() == 0.0
    value.backward()
    assert torch.all(Y.grad == 0)


def test_gradient_descent_through_the_expected_loss_reduces_the_pose_error():
    """The mechanism of DSAC: descending the expected loss moves noisy scene coordinates so that
    the estimated pose approaches the ground truth."""
    intrinsics = Intrinsics(150.0, 150.0, 80.5, 59.5, 160, 120)
    rng = np.random.default_rng(0)
    problem = make_problem(rng, 0.2, intrinsics=intrinsics, grid_hw=(12, 16), stride_px=10)
    noisy = torch.from_numpy(problem.coords_world + rng.normal(0, 0.15, size=problem.coords_world.shape))
    pixels = torch.from_numpy(problem.pixels_xy)
    Y = noisy.clone().requires_grad_(True)

    def pose_error():
        estimate, _ = estimate_pose(pixels, Y.detach(), intrinsics, RansacOptions(seed=0))
        assert estimate.success and is_valid_pose(estimate.world_T_cam)
        return pose_errors(estimate.world_T_cam, problem.world_T_cam)

    t0, r0 = pose_error()
    optimizer = torch.optim.Adam([Y], lr=4e-3)
    losses = []
    for step in range(100):
        loss, _ = expected_pose_loss(pixels, Y, intrinsics, problem.world_T_cam, RansacOptions(hypotheses=8),
                                     generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    t1, r1 = pose_error()
    assert t0 > 0.05  # the noisy start is visibly off
    assert t1 < 0.25 * t0 and r1 < 0.25 * r0
    assert np.mean(losses[-20:]) < 0.25 * np.mean(losses[:5])


def test_the_time_budget_ends_a_hopeless_frame_as_lost():
    """Correspondences of pure noise: almost every minimal set is rejected, so sampling would go
    through all its rounds. With a budget already spent after the first round, the frame ends there
    as LOST with the reason, and the budget is an option like any other (0 = none)."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(600, 2, generator=generator, dtype=torch.float64) * torch.tensor([640.0, 480.0], dtype=torch.float64)
    coords = torch.randn(600, 3, generator=generator, dtype=torch.float64) + torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    intrinsics = (525.0, 525.0, 319.5, 239.5)
    capped, info = estimate_pose(pixels, coords, intrinsics, RansacOptions(seed=0, time_budget_ms=1e-6))
    assert not capped.success and capped.reason == "time_budget_exceeded"
    assert info.sampling_rounds == 1
    free, free_info = estimate_pose(pixels, coords, intrinsics, RansacOptions(seed=0))
    assert free_info.sampling_rounds > 1 and free.reason != "time_budget_exceeded"
    with pytest.raises(ValueError, match="time_budget_ms"):
        RansacOptions(time_budget_ms=-1.0)
