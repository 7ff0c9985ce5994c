"""The differentiable DSAC expected loss (training): E[l] = sum_j p_j l(R(h_j), h*), p = softmax(scores).

Built from the run-time pieces of ``dsac_ros.dsac`` (sampling, scoring, refinement) with both gradient
paths: through the scores to every residual, and through refinement by the implicit-function steps
of ``dsac_ros.refinement``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from dsac_ros import refinement, solvers
from dsac_ros.dsac import (MINIMAL_SET_SIZE, RansacOptions, _check_inputs, _make_generator, _usable_points,
                           _world_T_cam, camera_tuple, hypothesis_residuals, sample_hypotheses, score_hypotheses)
from dsac_ros.pose_loss import LOSSES, cam_T_world_to_centre, pose_loss


def expected_pose_loss(pixels_xy: torch.Tensor, coords_world: torch.Tensor, intrinsics: Any,
                       world_T_cam_gt: Any, options: RansacOptions = RansacOptions(), loss: str = "dsacstar",
                       generator: torch.Generator | None = None, coords_cam: torch.Tensor | None = None,
                       score_cnn: torch.nn.Module | None = None, grid_hw: Sequence[int] | None = None,
                       ) -> tuple[torch.Tensor, dict[str, Any]]:
    """DSAC expected loss E = sum_j softmax(s)_j * loss(refine(h_j), h_true), differentiable.

    pixels_xy (N, 2); coords_world (N, 3) (usually the network output, with a graph);
    world_T_cam_gt (4, 4) array or tensor; loss ``dsacstar`` (deg + 100 m, soft clamp at 100) or
    ``max_deg_cm``; coords_cam (N, 3) selects RGB-D (Kabsch, gradient through the SVD).
    Gradients reach coords_world through the scores (residuals of all points and the minimal-set
    solutions) and through the refined poses (implicit function at the refinement optimum), and the
    score CNN's weights when options.score == "cnn".

    Returns (scalar loss in coords_world's dtype, details). When no valid hypothesis exists the loss
    is a zero connected to the graph and details["reason"] says so, so a training loop can skip the
    frame. details: probabilities (M,), scores (M,), losses (M,) (with graph), world_T_cam (M, 4, 4)
    refined poses (numpy), hypotheses_valid, selected (argmax index), reason.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    pixels_xy = torch.as_tensor(pixels_xy)
    _check_inputs(pixels_xy, coords_world, coords_cam, options, score_cnn, grid_hw)
    camera = camera_tuple(intrinsics)
    device, out_dtype = coords_world.device, coords_world.dtype
    pix = pixels_xy.detach().to(device=device, dtype=torch.float64)
    world = coords_world.to(torch.float64)  # keeps the graph
    cam = None if coords_cam is None else coords_cam.to(device=device, dtype=torch.float64)
    usable = _usable_points(pix, world.detach(), None if cam is None else cam.detach())
    usable_index = usable.nonzero().squeeze(-1)
    zero = (coords_world * 0).sum() if coords_world.requires_grad else coords_world.new_zeros(())
    details: dict[str, Any] = {"reason": "", "hypotheses_valid": 0}
    if usable_index.numel() < MINIMAL_SET_SIZE:
        details["reason"] = "too_few_points"
        return zero, details
    pix_u, world_u = pix[usable_index], world[usable_index]
    cam_u = None if cam is None else cam[usable_index]
    hyps = sample_hypotheses(pix_u, world_u.detach(), camera, options, _make_generator(options, device, generator),
                             None if cam_u is None else cam_u.detach())
    details["hypotheses_valid"] = len(hyps)
    if len(hyps) == 0:
        details["reason"] = "no_valid_hypothesis"
        return zero, details

    # Hypotheses with the derivative of the minimal solver attached.
    minimal_world = world_u[hyps.indices[:, :3]]
    if cam_u is None:
        R_h, t_h = refinement.minimal_set_implicit_step(hyps.R, hyps.t, pix_u[hyps.indices[:, :3]], minimal_world,
                                                     camera, options.max_jacobian_entry)
    else:
        R_h, t_h, _ = solvers.rigid_from_three_points(minimal_world, cam_u[hyps.indices[:, :3]])
    residuals = hypothesis_residuals(R_h, t_h, pix_u, world_u, camera, options, cam_u)
    scores = score_hypotheses(residuals, options, rgbd=cam is not None, score_cnn=score_cnn,
                              grid_hw=None if grid_hw is None else tuple(grid_hw), usable=usable)
    probabilities = torch.softmax(scores, 0)

    # Refine every hypothesis (batched, no graph), then attach the refinement's derivative.
    if cam_u is None:
        refined = refinement.refine_pnp(hyps.R, hyps.t, pix_u, world_u.detach(), camera, options.inlier_threshold_px,
                                     options.max_refinement_iterations, robust_scale_px=options.robust_scale_px)
        R_r, t_r = refinement.refinement_implicit_step(refined.R, refined.t, pix_u, world_u, camera, refined.inlier_mask,
                                                    options.max_jacobian_entry, options.robust_scale_px)
    else:
        refined = refinement.refine_kabsch(hyps.R, hyps.t, world_u.detach(), cam_u.detach(), options.inlier_threshold_m,
                                        options.max_refinement_iterations)
        R_k, t_k, ok = solvers.kabsch(world_u, torch.nan_to_num(cam_u), refined.inlier_mask.to(torch.float64))
        R_r = torch.where(ok[:, None, None], R_k, refined.R)
        t_r = torch.where(ok[:, None], t_k, refined.t)

    gt = torch.as_tensor(np.asarray(world_T_cam_gt, dtype=np.float64) if not isinstance(world_T_cam_gt, torch.Tensor)
                         else world_T_cam_gt.detach().cpu().double().numpy(), device=device)
    R_wc, c = cam_T_world_to_centre(R_r, t_r)
    losses = pose_loss(R_wc, c, gt[:3, :3], gt[:3, 3], kind=loss)
    expected = (probabilities * losses).sum()
    details.update(probabilities=probabilities, scores=scores, losses=losses, selected=int(scores.argmax()),
                   refinement_iterations=refined.iterations,
                   world_T_cam=_world_T_cam(R_r, t_r))
    return expected.to(out_dtype), details


__all__ = ["expected_pose_loss"]
