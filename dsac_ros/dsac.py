"""DSAC at run time: hypotheses, scoring, selection, refinement (the expected loss for training: dsac_training.py).

Two entry points, in the spirit of PoseLib's ``estimate_absolute_pose`` (one call, options in a
small struct, a result plus an info record):

- ``estimate_pose``: run time. Samples ``hypotheses`` minimal sets in one batched call (P3P + a
  4th point for RGB, 3-point rigid fit for RGB-D), scores them (soft inlier count of DSAC* or the
  score CNN of DSAC 2017), takes the argmax and refines it on its inliers.
- ``expected_pose_loss``: training. The same hypotheses, softmax over scores, every hypothesis
  refined, and ``sum_j p_j * loss(refine(h_j), h_true)``; gradients reach the scene coordinates
  through the scores and through the refined poses (and the score CNN's weights).

Minimal solvers and refinement run in float64: P3P and the normal equations lose digits in
float32, and their tensors are small, so their cost is the number of operations, not their width.
Run-time scoring, the one large (M, N) computation, runs in float32 (~1e-3 px), 3x faster on the
CPU. Training runs entirely in float64. Everything follows the input device. Internally poses are
``cam_T_world`` (R, t); the outputs are ``world_T_cam``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from dsac_ros import refinement, solvers
from dsac_ros.geometry import is_valid_pose
from dsac_ros.pose_loss import cam_T_world_to_centre
from dsac_ros.score_cnn import error_images

SCORES = ("soft_inlier", "cnn")
MINIMAL_SET_SIZE = 4  # 3 points for the solver + 1 to disambiguate and verify
SCORING_CHUNK = 32  # hypotheses scored at once at run time


@dataclass
class RansacOptions:
    """DSAC options; defaults are DSAC*'s (64 hypotheses, tau 10 px, beta 5 / tau, alpha 100)."""

    hypotheses: int = 64
    inlier_threshold_px: float = 10.0
    inlier_beta: float | None = None  # None -> 5 / inlier_threshold_px
    score_alpha: float = 100.0
    max_residual_px: float = 100.0
    max_refinement_iterations: int = 100
    # "cauchy" (scale tau / 2, as PoseLib's final fit) or "squared" (DSAC*'s plain least squares)
    refinement_loss: str = "cauchy"
    # Rejected minimal sets are redrawn in batched rounds sized from the observed acceptance rate.
    max_sampling_rounds: int = 8
    max_candidates_per_round: int = 16384
    min_inliers: int = 10
    score: str = "soft_inlier"  # or "cnn" (DSAC 2017 learned score)
    seed: int | None = None
    # RGB-D variant (coords_cam given): 3D distances instead of pixels.
    inlier_threshold_m: float = 0.10
    inlier_beta_rgbd: float | None = None  # None -> 5 / inlier_threshold_m
    max_residual_m: float = 1.0
    # Training guards (DSAC*): cut gradients of hypotheses whose pose Jacobian has an entry above this.
    max_jacobian_entry: float = 10.0
    covariance_min_sigma_px: float = 0.5
    # Wall-clock cap on one frame's DSAC (sampling, scoring, refinement) in ms; 0 = none. A frame
    # that runs past it is LOST ("time_budget_exceeded"), so a hopeless frame never blocks the next.
    time_budget_ms: float = 0.0
    # torch's CPU threads while a frame's DSAC runs (``Localizer``; 0 = torch's own setting). Its
    # tensors (64 hypotheses x 1200 cells) are too small to gain from more: measured on 2 cores,
    # 8.7-9.2 ms with 1 thread against 12-17 ms with 2, and 2 threads ran 2 times slower in a
    # worker thread (the node's) than in the main one.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.hypotheses < 1:
            raise ValueError(f"hypotheses must be >= 1, got {self.hypotheses}")
        if self.inlier_threshold_px <= 0 or self.inlier_threshold_m <= 0:
            raise ValueError("inlier thresholds must be positive")
        if self.max_residual_px <= self.inlier_threshold_px:
            raise ValueError("max_residual_px must exceed inlier_threshold_px")
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; choose from {SCORES}")
        if self.refinement_loss not in ("cauchy", "squared"):
            raise ValueError(f"unknown refinement_loss {self.refinement_loss!r}; choose 'cauchy' or 'squared'")
        if self.max_sampling_rounds < 1 or self.max_candidates_per_round < 1:
            raise ValueError("the sampling budget must be positive")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch's own setting), got {self.threads}")
        if not self.time_budget_ms >= 0:
            raise ValueError(f"time_budget_ms must be >= 0 (0 = no cap), got {self.time_budget_ms}")

    @property
    def beta(self) -> float:
        return 5.0 / self.inlier_threshold_px if self.inlier_beta is None else self.inlier_beta

    @property
    def robust_scale_px(self) -> float | None:
        return self.inlier_threshold_px / 2.0 if self.refinement_loss == "cauchy" else None

    @property
    def beta_rgbd(self) -> float:
        return 5.0 / self.inlier_threshold_m if self.inlier_beta_rgbd is None else self.inlier_beta_rgbd


@dataclass
class PoseEstimate:
    """Result of ``estimate_pose``. On failure ``world_T_cam`` and ``covariance_6x6`` are None and
    ``reason`` says why; nothing in it is ever NaN or infinite."""

    success: bool
    world_T_cam: np.ndarray | None  # (4, 4) float64
    inlier_mask: np.ndarray  # (N,) bool over the input correspondences
    inlier_count: int
    score: float
    reason: str = ""
    covariance_6x6: np.ndarray | None = None  # (x, y, z, rot X, rot Y, rot Z) in the world frame, m^2 / rad^2


@dataclass
class RansacInfo:
    """What happened in one ``estimate_pose`` call. hypotheses_valid < hypotheses_requested when the
    redraw budget ran out (the frame is still solved with the valid ones); candidates_drawn counts
    all minimal sets solved, sampling_rounds the batched redraw rounds."""

    hypotheses_requested: int = 0
    hypotheses_valid: int = 0
    sampling_rounds: int = 0
    candidates_drawn: int = 0
    refinement_iterations: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)  # sampling, scoring, refinement, total


class Hypotheses:
    """A batch of M pose hypotheses and the minimal sets they came from.

    R (M, 3, 3), t (M, 3): cam_T_world, float64, no graph; indices (M, 4) into the usable points.
    """

    def __init__(self, R: torch.Tensor, t: torch.Tensor, indices: torch.Tensor, rounds: int, drawn: int):
        self.R, self.t, self.indices, self.rounds, self.drawn = R, t, indices, rounds, drawn

    def __len__(self) -> int:
        return int(self.R.shape[0])


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------

def camera_tuple(intrinsics: Any) -> solvers.Camera:
    """Intrinsics, (fx, fy, cx, cy) or a (3, 3) K -> (fx, fy, cx, cy) floats."""
    if hasattr(intrinsics, "fx_px"):
        return (float(intrinsics.fx_px), float(intrinsics.fy_px), float(intrinsics.cx_px), float(intrinsics.cy_px))
    values = np.asarray(intrinsics.detach().cpu() if isinstance(intrinsics, torch.Tensor) else intrinsics, dtype=np.float64)
    if values.shape == (3, 3):
        return (float(values[0, 0]), float(values[1, 1]), float(values[0, 2]), float(values[1, 2]))
    if values.shape == (4,):
        return tuple(float(v) for v in values)  # type: ignore[return-value]
    raise ValueError(f"intrinsics must be Intrinsics, (fx, fy, cx, cy) or a 3x3 K, got shape {values.shape}")


def _check_inputs(pixels_xy: torch.Tensor, coords_world: torch.Tensor, coords_cam: torch.Tensor | None,
                  options: RansacOptions, score_cnn, grid_hw) -> None:
    """Programming errors (shapes, missing score CNN) raise ValueError before any work is done."""
    if options.score == "cnn" and (score_cnn is None or grid_hw is None):
        raise ValueError('score="cnn" needs score_cnn (a ScoreCNN) and grid_hw=(H, W) of the pixel grid')
    if options.score == "cnn" and int(grid_hw[0]) * int(grid_hw[1]) != pixels_xy.shape[0]:
        raise ValueError(f"grid_hw {tuple(grid_hw)} does not match {pixels_xy.shape[0]} correspondences")
    if pixels_xy.ndim != 2 or pixels_xy.shape[-1] != 2:
        raise ValueError(f"pixels_xy must be (N, 2), got {tuple(pixels_xy.shape)}")
    if coords_world.shape != (pixels_xy.shape[0], 3):
        raise ValueError(f"coords_world must be ({pixels_xy.shape[0]}, 3), got {tuple(coords_world.shape)}")
    if coords_cam is not None and coords_cam.shape != coords_world.shape:
        raise ValueError(f"coords_cam must be {tuple(coords_world.shape)}, got {tuple(coords_cam.shape)}")


def _usable_points(pixels_xy, coords_world, coords_cam) -> torch.Tensor:
    """(N,) bool: finite correspondences (and, for RGB-D, a finite camera point in front)."""
    usable = torch.isfinite(pixels_xy).all(-1) & torch.isfinite(coords_world).all(-1)
    if coords_cam is not None:
        usable = usable & torch.isfinite(coords_cam).all(-1) & (coords_cam[:, 2] > 0)
    return usable


def _make_generator(options: RansacOptions, device: torch.device, generator: torch.Generator | None):
    if generator is not None:
        return generator
    if options.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(options.seed))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# hypotheses
# --------------------------------------------------------------------------------------------

def _distinct(pick: torch.Tensor) -> torch.Tensor:
    a, b, c, d = pick.unbind(-1)
    return (a != b) & (a != c) & (a != d) & (b != c) & (b != d) & (c != d)


@torch.no_grad()
def _candidates_pnp(pick, table, camera, threshold_px):
    """Solve K minimal sets (K, 4) of usable-point indices with P3P on the first three; the 4th
    point picks among the up to 4 solutions and must reproject within the threshold (the first
    three do by construction). table (n, 8) = (pixel xy, world xyz, bearing xyz) per point.
    Returns R (k, 3, 3), t (k, 3) and the indices (k,) into pick of the k accepted sets. Poses
    are formed only for accepted sets: at 70 % outliers that is ~1 % of them.
    """
    rows = table[pick]  # (K, 4, 8): one gather instead of three
    bearings, world = rows[:, :3, 5:8], rows[:, :3, 2:5]
    depths, valid, F_world_inv = solvers.p3p_depths(bearings, world)  # (K, 4, 3), (K, 4), (K, 3, 3)
    fourth_cam = solvers.transform_by_depths(depths, bearings, F_world_inv, world, rows[:, 3, 2:5])  # (K, 4, 3)
    projected, in_front = solvers.project(fourth_cam, camera)
    err_sq = ((projected - rows[:, 3, None, 0:2]) ** 2).sum(-1)
    err_sq = torch.where(valid & in_front, err_sq, torch.full_like(err_sq, math.inf))
    best_err_sq, best = err_sq.min(-1)
    accepted = ((best_err_sq < threshold_px ** 2) & _distinct(pick)).nonzero().squeeze(-1)
    chosen = depths[accepted, best[accepted]]  # (k, 3)
    R, t, finite = solvers.pose_from_depths(chosen, bearings[accepted], F_world_inv[accepted], world[accepted])
    return R[finite], t[finite], accepted[finite]


@torch.no_grad()
def _candidates_rgbd(pick, coords_world, coords_cam, threshold_m):
    """RGB-D minimal sets: rigid fit on 3 points, all 4 within the 3D threshold."""
    world, cam = coords_world[pick], coords_cam[pick]  # (K, 4, 3)
    R, t, valid = solvers.rigid_from_three_points(world[:, :3], cam[:, :3])
    err_sq = ((world @ R.transpose(-1, -2) + t[:, None] - cam) ** 2).sum(-1)
    ok = valid & (err_sq.amax(-1) < threshold_m ** 2) & _distinct(pick)
    return R, t, ok


@torch.no_grad()
def sample_hypotheses(pixels_xy: torch.Tensor, coords_world: torch.Tensor, camera: solvers.Camera,
                      options: RansacOptions, generator: torch.Generator | None = None,
                      coords_cam: torch.Tensor | None = None, count: int | None = None,
                      deadline_s: float | None = None) -> Hypotheses:
    """Draw up to ``count`` (default options.hypotheses) valid hypotheses, batched.

    pixels_xy (n, 2), coords_world (n, 3) [, coords_cam (n, 3)]: usable points only, float64.
    Minimal sets that are degenerate, non-finite, or whose points do not fit the hypothesis within
    the inlier threshold are rejected and redrawn, in at most ``max_sampling_rounds`` batched rounds;
    each round draws as many candidates as the acceptance rate seen so far predicts are needed.
    May return fewer than ``count`` hypotheses (possibly none) when the budget runs out, or when
    ``deadline_s`` (a ``time.perf_counter()`` value) has passed after a round.
    """
    count = options.hypotheses if count is None else count
    device, dtype = coords_world.device, coords_world.dtype
    n = coords_world.shape[0]
    R_parts, t_parts, idx_parts = [], [], []
    have, drawn, accepted, rounds = 0, 0, 0, 0
    sampling_start_s = time.perf_counter()
    if n >= MINIMAL_SET_SIZE:
        if coords_cam is None:
            table = torch.cat([pixels_xy, coords_world, solvers.bearings_from_pixels(pixels_xy, camera)], -1)
        while have < count and rounds < options.max_sampling_rounds:
            if rounds and deadline_s is not None and time.perf_counter() > deadline_s:
                break
            need = count - have
            # Optimistic first round (a quarter valid), then sized by the measured rate (+30 %).
            rate = 0.25 if drawn == 0 else max(accepted / drawn, 1.0 / options.max_candidates_per_round)
            size = int(min(max(math.ceil(1.3 * need / rate), need), options.max_candidates_per_round))
            if rounds and deadline_s is not None:
                # Under a deadline a round may take only the time left, at the pace measured so far:
                # a hopeless frame's rounds grow to max_candidates_per_round (~20 ms each on 2
                # cores), which overshot a 30 ms budget by up to 19 ms (bench/bench_frame.py).
                per_candidate_s = (time.perf_counter() - sampling_start_s) / max(drawn, 1)
                affordable = int((deadline_s - time.perf_counter()) / max(per_candidate_s, 1e-9))
                size = max(min(size, affordable), min(need, size))
            pick = torch.randint(n, (size, MINIMAL_SET_SIZE), device=device, generator=generator)
            if coords_cam is None:
                R, t, accepted_index = _candidates_pnp(pick, table, camera, options.inlier_threshold_px)
            else:
                R, t, ok = _candidates_rgbd(pick, coords_world, coords_cam, options.inlier_threshold_m)
                accepted_index = ok.nonzero().squeeze(-1)
                R, t = R[accepted_index], t[accepted_index]
            rounds += 1
            drawn += size
            accepted += int(accepted_index.numel())
            R_parts.append(R[:need])
            t_parts.append(t[:need])
            idx_parts.append(pick[accepted_index[:need]])
            have += min(need, int(accepted_index.numel()))
    if not R_parts:
        return Hypotheses(torch.zeros(0, 3, 3, dtype=dtype, device=device), torch.zeros(0, 3, dtype=dtype, device=device),
                          torch.zeros(0, MINIMAL_SET_SIZE, dtype=torch.long, device=device), rounds, drawn)
    return Hypotheses(torch.cat(R_parts), torch.cat(t_parts), torch.cat(idx_parts), rounds, drawn)


# --------------------------------------------------------------------------------------------
# scoring and selection
# --------------------------------------------------------------------------------------------

def soft_inlier_scores(residuals: torch.Tensor, threshold: float, beta: float, alpha: float) -> torch.Tensor:
    """DSAC* soft inlier count: (M, N) clamped residuals -> (M,) = alpha/N sum(1 - sigmoid(beta (r - tau)))."""
    n = max(residuals.shape[-1], 1)
    return (alpha / n) * torch.sigmoid(-beta * (residuals - threshold)).sum(-1)


def hypothesis_residuals(R: torch.Tensor, t: torch.Tensor, pixels_xy: torch.Tensor, coords_world: torch.Tensor,
                         camera: solvers.Camera, options: RansacOptions,
                         coords_cam: torch.Tensor | None = None) -> torch.Tensor:
    """(M, n) residuals of every usable point under every hypothesis: px (RGB) or m (RGB-D), clamped."""
    if coords_cam is None:
        return solvers.reprojection_residuals(R, t, pixels_xy, coords_world, camera, options.max_residual_px)
    return solvers.alignment_residuals(R, t, coords_world, coords_cam, options.max_residual_m)


def score_hypotheses(residuals: torch.Tensor, options: RansacOptions, rgbd: bool = False, score_cnn=None,
                     grid_hw: tuple[int, int] | None = None, usable: torch.Tensor | None = None) -> torch.Tensor:
    """(M, n) residuals -> (M,) scores (soft inlier count or score CNN)."""
    if options.score == "soft_inlier":
        if rgbd:
            return soft_inlier_scores(residuals, options.inlier_threshold_m, options.beta_rgbd, options.score_alpha)
        return soft_inlier_scores(residuals, options.inlier_threshold_px, options.beta, options.score_alpha)
    if score_cnn is None or grid_hw is None:
        raise ValueError('score="cnn" needs score_cnn (a ScoreCNN) and grid_hw=(H, W) of the pixel grid')
    max_residual = options.max_residual_m if rgbd else options.max_residual_px
    full = residuals
    if usable is not None and usable.shape[0] != residuals.shape[-1]:
        # Unusable grid cells (no prediction, no depth) show as maximal errors.
        full = residuals.new_full((residuals.shape[0], usable.shape[0]), max_residual)
        full = full.masked_scatter(usable[None].expand_as(full), residuals)
    parameter = next(score_cnn.parameters(), None)
    cnn_dtype = parameter.dtype if parameter is not None else residuals.dtype
    images = error_images(full, grid_hw, max_residual).to(cnn_dtype)
    return score_cnn(images).to(residuals.dtype)


def select_hypothesis(scores: torch.Tensor, mode: str = "argmax", generator: torch.Generator | None = None) -> int:
    """Index of the selected hypothesis: ``argmax`` (run time) or ``sample`` j ~ softmax(scores)."""
    if mode == "argmax":
        return int(scores.argmax())
    if mode == "sample":
        probabilities = torch.softmax(scores.detach(), 0)
        return int(torch.multinomial(probabilities, 1, generator=generator))
    raise ValueError(f"unknown selection {mode!r}")


def _world_T_cam(R: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    """cam_T_world (..., 3, 3), (..., 3) -> (..., 4, 4) float64 numpy world_T_cam."""
    R_wc, c = cam_T_world_to_centre(R.detach(), t.detach())
    pose = np.zeros((*R_wc.shape[:-2], 4, 4))
    pose[..., :3, :3] = R_wc.double().cpu().numpy()
    pose[..., :3, 3] = c.double().cpu().numpy()
    pose[..., 3, 3] = 1.0
    return pose


# --------------------------------------------------------------------------------------------
# run time
# --------------------------------------------------------------------------------------------

def estimate_pose(pixels_xy: torch.Tensor, coords_world: torch.Tensor, intrinsics: Any,
                  options: RansacOptions = RansacOptions(), coords_cam: torch.Tensor | None = None,
                  score_cnn: torch.nn.Module | None = None, grid_hw: Sequence[int] | None = None,
                  generator: torch.Generator | None = None) -> tuple[PoseEstimate, RansacInfo]:
    """Camera pose from 2D-3D correspondences by DSAC (argmax selection), one frame.

    pixels_xy (N, 2) px; coords_world (N, 3) m; intrinsics: ``Intrinsics``, (fx, fy, cx, cy) or K;
    coords_cam (N, 3) m camera-frame points from depth selects the RGB-D variant (rows without
    depth may be NaN); grid_hw (H, W) with H * W = N, pixels in row-major grid order, is needed by
    the score CNN. Non-finite correspondences are ignored. Never raises on bad data and never
    returns NaN: failures come back as ``success=False`` with a reason (``too_few_points``,
    ``no_valid_hypothesis``, ``too_few_inliers``, ``invalid_pose``). Raises ValueError only for
    wrong shapes or options.
    """
    start = time.perf_counter()
    pixels_xy = torch.as_tensor(pixels_xy)
    coords_world = torch.as_tensor(coords_world)
    _check_inputs(pixels_xy, coords_world, coords_cam, options, score_cnn, grid_hw)
    camera = camera_tuple(intrinsics)
    device = coords_world.device
    num_points = pixels_xy.shape[0]
    info = RansacInfo(hypotheses_requested=options.hypotheses)
    empty_mask = np.zeros(num_points, dtype=bool)

    def failure(reason: str, score: float = 0.0) -> tuple[PoseEstimate, RansacInfo]:
        info.timings_ms["total"] = (time.perf_counter() - start) * 1e3
        score = score if math.isfinite(score) else 0.0
        return PoseEstimate(False, None, empty_mask, 0, score, reason), info

    with torch.no_grad():
        pix = pixels_xy.detach().to(device=device, dtype=torch.float64)
        world = coords_world.detach().to(torch.float64)
        cam = None if coords_cam is None else torch.as_tensor(coords_cam).detach().to(device=device, dtype=torch.float64)
        usable = _usable_points(pix, world, cam)
        usable_index = usable.nonzero().squeeze(-1)
        if usable_index.numel() < MINIMAL_SET_SIZE:
            info.timings_ms.update(sampling=0.0, scoring=0.0, refinement=0.0)
            return failure("too_few_points")
        pix_u, world_u = pix[usable_index], world[usable_index]
        cam_u = None if cam is None else cam[usable_index]

        deadline_s = start + options.time_budget_ms / 1e3 if options.time_budget_ms > 0 else None
        t0 = time.perf_counter()
        hyps = sample_hypotheses(pix_u, world_u, camera, options, _make_generator(options, device, generator), cam_u,
                                 deadline_s=deadline_s)
        _sync(device)
        t1 = time.perf_counter()
        info.hypotheses_valid, info.sampling_rounds, info.candidates_drawn = len(hyps), hyps.rounds, hyps.drawn
        info.timings_ms["sampling"] = (t1 - t0) * 1e3
        if deadline_s is not None and t1 > deadline_s:
            # Past the budget with sampling alone: the frame is hopeless or the machine overloaded.
            info.timings_ms.update(scoring=0.0, refinement=0.0)
            return failure("time_budget_exceeded")
        if len(hyps) == 0:
            info.timings_ms.update(scoring=0.0, refinement=0.0)
            return failure("no_valid_hypothesis")

        # Scoring in float32 (residuals to ~1e-3 px, 3x faster than float64 on the CPU), in chunks of
        # hypotheses so the (chunk, N) temporaries stay in cache: 2x faster at 256 hypotheses.
        pix_s, world_s = pix_u.float(), world_u.float()
        cam_s = None if cam_u is None else cam_u.float()
        chunks = []
        for first in range(0, len(hyps), SCORING_CHUNK):
            residuals = hypothesis_residuals(hyps.R[first:first + SCORING_CHUNK].float(),
                                             hyps.t[first:first + SCORING_CHUNK].float(), pix_s, world_s, camera,
                                             options, cam_s)
            chunks.append(score_hypotheses(residuals, options, rgbd=cam is not None, score_cnn=score_cnn,
                                           grid_hw=None if grid_hw is None else tuple(grid_hw), usable=usable))
        scores = torch.cat(chunks)
        scores = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))
        best = select_hypothesis(scores)
        best_score = float(scores[best])
        _sync(device)
        t2 = time.perf_counter()
        info.timings_ms["scoring"] = (t2 - t1) * 1e3

        R0, t0_ = hyps.R[best:best + 1], hyps.t[best:best + 1]
        if cam is None:
            refined = refinement.refine_pnp(R0, t0_, pix_u, world_u, camera, options.inlier_threshold_px,
                                         options.max_refinement_iterations, robust_scale_px=options.robust_scale_px)
        else:
            refined = refinement.refine_kabsch(R0, t0_, world_u, cam_u, options.inlier_threshold_m,
                                            options.max_refinement_iterations)
        _sync(device)
        info.refinement_iterations = refined.iterations
        info.timings_ms["refinement"] = (time.perf_counter() - t2) * 1e3

        inliers_u = refined.inlier_mask[0]
        inlier_count = int(inliers_u.sum())
        if inlier_count < options.min_inliers:
            return failure("too_few_inliers", best_score)
        world_T_cam = _world_T_cam(refined.R[0], refined.t[0])
        if not is_valid_pose(world_T_cam):
            return failure("invalid_pose", best_score)
        inlier_mask = np.zeros(num_points, dtype=bool)
        inlier_mask[usable_index[inliers_u].cpu().numpy()] = True
        covariance = refinement.pose_covariance(torch.as_tensor(world_T_cam, device=device), pix_u, world_u, camera,
                                             inliers_u, min_sigma_px=options.covariance_min_sigma_px)
    info.timings_ms["total"] = (time.perf_counter() - start) * 1e3
    estimate = PoseEstimate(True, world_T_cam, inlier_mask, inlier_count, best_score, "",
                            covariance.cpu().numpy())
    return estimate, info


def pose_covariance(estimate: PoseEstimate, pixels_xy: torch.Tensor, coords_world: torch.Tensor, intrinsics: Any,
                    min_sigma_px: float = 0.5) -> np.ndarray | None:
    """(6, 6) covariance (x, y, z, rot X, rot Y, rot Z; world frame; m^2, rad^2) of a successful
    estimate from its inliers; None for a failed one. ``estimate_pose`` already fills
    ``estimate.covariance_6x6``; this recomputes it, e.g. with another noise floor."""
    if not estimate.success or estimate.world_T_cam is None:
        return None
    pixels_xy, coords_world = torch.as_tensor(pixels_xy), torch.as_tensor(coords_world)
    mask = torch.as_tensor(estimate.inlier_mask, device=coords_world.device)
    return refinement.pose_covariance(torch.as_tensor(estimate.world_T_cam, device=coords_world.device), pixels_xy,
                                   coords_world, camera_tuple(intrinsics), mask, min_sigma_px).cpu().numpy()
