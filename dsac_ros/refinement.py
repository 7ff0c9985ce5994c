"""Refinement of pose hypotheses, its implicit-function gradients, and the pose covariance.

The same conventions as ``dsac_ros.solvers`` (``cam_T_world`` as R (..., 3, 3), t (..., 3); camera =
(fx_px, fy_px, cx_px, cy_px)): Levenberg-Marquardt on the reprojection error of the inliers
(``refine_pnp``), Kabsch on 3D inliers (``refine_kabsch``), the exact derivative of a P3P solution
and of a refined pose with respect to the scene coordinates (``minimal_set_implicit_step``,
``refinement_implicit_step``, for end-to-end training), and ``pose_covariance`` from the inlier set.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dsac_ros.solvers import MIN_DEPTH_M, Camera, alignment_residuals, kabsch, project, so3_exp, transform


def _projection_jacobian(points_cam: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(..., 3) camera points -> (..., 2, 6) d(pixel)/d(rotation, translation) for the left update
    X' = exp(w) X + v (w, v in the camera frame)."""
    fx, fy, _, _ = camera
    x, y, z = points_cam.unbind(-1)
    z = torch.where(z > MIN_DEPTH_M, z, torch.full_like(z, MIN_DEPTH_M))
    iz = 1.0 / z
    xz, yz = x * iz, y * iz
    zero = torch.zeros_like(x)
    du = torch.stack([-fx * xz * yz, fx * (1 + xz * xz), -fx * yz, fx * iz, zero, -fx * xz * iz], -1)
    dv = torch.stack([-fy * (1 + yz * yz), fy * xz * yz, fy * xz, zero, fy * iz, -fy * yz * iz], -1)
    return torch.stack([du, dv], -2)


def apply_update(R: torch.Tensor, t: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left update of cam_T_world: delta (B, 6) = (w, v) -> R' = exp(w) R, t' = exp(w) t + v."""
    E = so3_exp(delta[..., :3])
    return E @ R, (E @ t[..., None]).squeeze(-1) + delta[..., 3:]


class RefinementResult(NamedTuple):
    R: torch.Tensor  # (B, 3, 3)
    t: torch.Tensor  # (B, 3)
    inlier_mask: torch.Tensor  # (B, N) bool, at the final pose
    iterations: int
    converged: torch.Tensor  # (B,) bool


def _camera_components(R: torch.Tensor, t: torch.Tensor, coords_world_T: torch.Tensor):
    """R (B, 3, 3), t (B, 3), coords_world_T (3, N) contiguous -> x, y, z camera coordinates, each (B, N).

    The transposed copy must be contiguous: a (3, 3) @ strided (3, N) product is 10x slower.
    """
    B, N = R.shape[0], coords_world_T.shape[1]
    points = (R.reshape(3 * B, 3) @ coords_world_T).reshape(B, 3, N) + t[..., None]
    return points.unbind(1)


def _jacobian_rows(x, y, z, camera: Camera):
    """Rows of d(pixel)/d(w, v) for the left update, as two (B, 6, N) tensors (u rows, v rows).

    Stacked along a middle dimension (contiguous copies): stacking into a trailing (..., 2, 6)
    layout costs more than the rest of an LM iteration on the CPU.
    """
    fx, fy, _, _ = camera
    iz = 1.0 / z
    xz, yz = x * iz, y * iz
    zero = torch.zeros_like(x)
    du = torch.stack([-fx * xz * yz, fx * (1 + xz * xz), -fx * yz, fx * iz, zero, -fx * xz * iz], 1)
    dv = torch.stack([-fy * (1 + yz * yz), fy * xz * yz, fy * xz, zero, fy * iz, -fy * yz * iz], 1)
    return du, dv


def refinement_energy(squared_residual: torch.Tensor, robust_scale_px: float | None) -> torch.Tensor:
    """Per-point refinement energy: r^2 (least squares) or Cauchy s^2 log(1 + r^2 / s^2).

    The Cauchy loss (PoseLib's choice for the final fit, with s = tau / 2) down-weights the few
    outliers that fall inside the inlier threshold by chance; both refinement and its implicit
    derivative minimise this same energy.
    """
    if robust_scale_px is None:
        return squared_residual
    s_sq = robust_scale_px ** 2
    return s_sq * torch.log1p(squared_residual / s_sq)


@torch.no_grad()
def refine_pnp(R: torch.Tensor, t: torch.Tensor, pixels_xy: torch.Tensor, coords_world: torch.Tensor, camera: Camera,
               inlier_threshold_px: float, max_iterations: int = 100, point_mask: torch.Tensor | None = None,
               gradient_tolerance: float = 1e-8, robust_scale_px: float | None = None) -> RefinementResult:
    """Levenberg-Marquardt on the reprojection error of the hard inliers, batched over hypotheses.

    R (B, 3, 3), t (B, 3) initial cam_T_world; pixels_xy (N, 2); coords_world (N, 3);
    point_mask (N,) bool of usable correspondences. Minimises ``refinement_energy`` over the inliers
    (squared error, or Cauchy with robust_scale_px, by iteratively reweighted LM). The inlier set
    (residual < threshold) is re-selected after every accepted step.

    A hypothesis stops at a stationary point of its inliers' energy: when the relative gradient
    max_j |(J^T W r)_j| / (|J|^T W |r|)_j falls below gradient_tolerance (scale-free, so the same
    test holds for any focal length, scene size or noise level), or when LM can no longer lower
    the energy (damping at its cap), or at max_iterations. The relative gradient's own rounding
    is about N * eps (1e-12 for 10^4 points in float64), so any tolerance down to 1e-10 is reached
    on any CPU and BLAS; it is never taken below 1000 eps of the dtype. The default 1e-8 moves the
    pose by far less than pixel noise does and costs as many iterations as the former absolute
    1e-8 step rule (median 13.5 vs 14 on the tiny scene).
    """
    fx, fy, cx, cy = camera
    dtype = R.dtype
    B = R.shape[0]
    px, py = pixels_xy[:, 0].to(dtype), pixels_xy[:, 1].to(dtype)
    coords_world_T = coords_world.to(dtype).T.contiguous()
    usable = torch.ones(pixels_xy.shape[0], dtype=torch.bool, device=R.device) if point_mask is None else point_mask
    damping = torch.full((B,), 1e-4, dtype=dtype, device=R.device)
    converged = torch.zeros(B, dtype=torch.bool, device=R.device)
    eye6 = torch.eye(6, dtype=dtype, device=R.device)
    tau_sq = inlier_threshold_px ** 2
    gradient_tolerance = max(float(gradient_tolerance), 1e3 * torch.finfo(dtype).eps)

    def evaluate(R_, t_):
        x, y, z = _camera_components(R_, t_, coords_world_T)
        in_front = z > MIN_DEPTH_M
        z = torch.where(in_front, z, torch.full_like(z, MIN_DEPTH_M))
        eu = fx * x / z + cx - px
        ev = fy * y / z + cy - py
        return (x, y, z, eu, ev), eu * eu + ev * ev, in_front

    state, sq, in_front = evaluate(R, t)
    inliers = (sq < tau_sq) & in_front & usable
    iterations = 0  # accepted or rejected LM steps taken
    for _ in range(max_iterations + 1):  # the last pass only tests the final pose
        w = inliers.to(dtype)
        x, y, z, eu, ev = state
        du, dv = _jacobian_rows(x, y, z, camera)
        # IRLS weight rho'(r^2) (1 for squared error) on the inliers
        w_irls = w if robust_scale_px is None else w / (1.0 + sq / robust_scale_px ** 2)
        du_w, dv_w = du * w_irls[:, None], dv * w_irls[:, None]
        JtJ = du_w @ du.transpose(1, 2) + dv_w @ dv.transpose(1, 2)  # (B, 6, 6)
        Jte = (du_w @ eu[..., None] + dv_w @ ev[..., None]).squeeze(-1)  # (B, 6)
        # Stationary already (to the tolerance): stop before a step that rounding would dominate.
        gradient_scale = (du_w.abs() @ eu.abs()[..., None] + dv_w.abs() @ ev.abs()[..., None]).squeeze(-1)
        stationary = (Jte.abs() <= gradient_tolerance * gradient_scale).all(-1)
        converged = converged | stationary
        if bool(converged.all()) or iterations == max_iterations:
            break
        iterations += 1
        if robust_scale_px is not None:
            # Second-order robust term (Triggs et al.): along the residual direction the curvature
            # is rho' + 2 rho'' r^2; kept >= 0.1 rho' so the system stays positive definite. Without
            # it IRLS converges linearly and needs several times more iterations.
            u = sq / robust_scale_px ** 2
            along = (w_irls * (1.0 - 2.0 * u / (1.0 + u))).clamp_min(0.1 * w_irls)
            J_r = du * eu[:, None] + dv * ev[:, None]  # (B, 6, N): r^T J per point, times |r|
            JtJ = JtJ + (J_r * ((along - w_irls) / sq.clamp_min(1e-12))[:, None]) @ J_r.transpose(1, 2)
        cost = (refinement_energy(sq, robust_scale_px) * w).sum(-1)
        A = JtJ + damping[:, None, None] * torch.diag_embed(JtJ.diagonal(dim1=-2, dim2=-1)) + 1e-12 * eye6
        delta = -torch.linalg.solve(A, Jte[..., None]).squeeze(-1)
        delta = torch.where(torch.isfinite(delta).all(-1, keepdim=True) & ~converged[:, None], delta, torch.zeros_like(delta))
        R_new, t_new = apply_update(R, t, delta)
        state_new, sq_new, in_front_new = evaluate(R_new, t_new)
        sq_new_front = torch.where(in_front_new, sq_new, torch.full_like(sq_new, tau_sq))
        cost_new = (refinement_energy(sq_new_front, robust_scale_px) * w).sum(-1)
        accept = (cost_new <= cost) & ~converged
        damping = torch.where(accept, (damping * 0.1).clamp_min(1e-10), (damping * 10.0).clamp_max(1e6))
        a2, a1 = accept[:, None, None], accept[:, None]
        R, t = torch.where(a2, R_new, R), torch.where(a1, t_new, t)
        state = tuple(torch.where(a1, new, old) for new, old in zip(state_new, state))
        sq = torch.where(a1, sq_new, sq)
        in_front = torch.where(a1, in_front_new, in_front)
        new_inliers = (sq < tau_sq) & in_front & usable
        same_set = (new_inliers == inliers).all(-1)
        # A rejected step with huge damping means LM cannot lower the energy: a minimum too.
        stuck = ~accept & (damping >= 1e6)
        converged = converged | (same_set & stuck)
        inliers = new_inliers
    return RefinementResult(R, t, inliers, iterations, converged)


@torch.no_grad()
def refine_kabsch(R: torch.Tensor, t: torch.Tensor, coords_world: torch.Tensor, coords_cam: torch.Tensor,
                  inlier_threshold_m: float, max_iterations: int = 100) -> RefinementResult:
    """RGB-D refinement: Kabsch on the hard 3D inliers, repeated until the inlier set is stable.

    R (B, 3, 3), t (B, 3); coords_world, coords_cam (N, 3) (non-finite camera rows never inliers).
    """
    B = R.shape[0]
    converged = torch.zeros(B, dtype=torch.bool, device=R.device)
    inliers = alignment_residuals(R, t, coords_world, coords_cam, 2 * inlier_threshold_m) < inlier_threshold_m
    cam = torch.nan_to_num(coords_cam, nan=0.0, posinf=0.0, neginf=0.0)
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        R_new, t_new, ok = kabsch(coords_world, cam, inliers.to(R.dtype))
        update = ok & ~converged
        R = torch.where(update[:, None, None], R_new, R)
        t = torch.where(update[:, None], t_new, t)
        new_inliers = alignment_residuals(R, t, coords_world, coords_cam, 2 * inlier_threshold_m) < inlier_threshold_m
        converged = converged | (new_inliers == inliers).all(-1) | ~ok
        inliers = new_inliers
        if bool(converged.all()):
            break
    return RefinementResult(R, t, inliers, iterations, converged)


# --------------------------------------------------------------------------------------------
# implicit-function gradients (training)
# --------------------------------------------------------------------------------------------

def _guard(delta: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Keep the gradient of delta (B, 6) only where ok (B,): exploding Jacobians are cut, not clipped."""
    return torch.where(ok[:, None], delta, delta.detach())


def minimal_set_implicit_step(R0: torch.Tensor, t0: torch.Tensor, pixels_xy: torch.Tensor, coords_world: torch.Tensor,
                              camera: Camera, max_jacobian_entry: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Attach the exact derivative of a P3P solution to the scene coordinates of its minimal set.

    R0 (B, 3, 3), t0 (B, 3): P3P solutions (no graph); pixels_xy (B, 3, 2); coords_world (B, 3, 3)
    with a graph. At a P3P solution the six reprojection residuals r(h, Y) vanish, so
    dh/dY = -(dr/dh)^-1 dr/dY; one Newton step h = h0 - (dr/dh)^-1 r(h0, Y) has exactly this
    derivative and (to round-off) the value h0. Sets whose Jacobian dh/dY has an entry above
    max_jacobian_entry (DSAC*'s guard) or a singular dr/dh keep their value without a gradient.
    """
    B = R0.shape[0]
    with torch.no_grad():
        points_cam = transform(R0, t0, coords_world.detach())
        J = _projection_jacobian(points_cam, camera).reshape(B, 6, 6)  # dr/dh for 3 points x 2
        fx, fy, _, _ = camera
        x, y, z = points_cam.unbind(-1)
        zero = torch.zeros_like(x)
        dproj = torch.stack([torch.stack([fx / z, zero, -fx * x / z ** 2], -1),
                             torch.stack([zero, fy / z, -fy * y / z ** 2], -1)], -2)  # (B, 3, 2, 3)
        dr_dY = dproj @ R0[:, None]  # (B, 3, 2, 3) block diagonal entries of dr/dY
        dr_dY_full = torch.zeros(B, 3, 2, 3, 3, dtype=R0.dtype, device=R0.device)
        idx = torch.arange(3, device=R0.device)
        dr_dY_full[:, idx, :, idx, :] = dr_dY.permute(1, 0, 2, 3)
        dr_dY_full = dr_dY_full.reshape(B, 6, 9)
        solvable = torch.linalg.matrix_rank(J) == 6 if B > 0 else torch.zeros(0, dtype=torch.bool)
        J_safe = torch.where(solvable[:, None, None], J, torch.eye(6, dtype=J.dtype, device=J.device).expand_as(J))
        dh_dY = -torch.linalg.solve(J_safe, dr_dY_full)
        ok = solvable & torch.isfinite(dh_dY).all(-1).all(-1) & (dh_dY.abs().amax((-1, -2)) <= max_jacobian_entry)
    projected, _ = project(transform(R0, t0, coords_world), camera)
    residual = (projected - pixels_xy).reshape(B, 6)
    delta = -torch.linalg.solve(J_safe, residual[..., None]).squeeze(-1)
    return apply_update(R0, t0, _guard(delta, ok))


def _energy_gradient_hessian(R0, t0, pixels_xy, coords_world, camera, weights, robust_scale_px, create_graph):
    """Gradient g (B, 6) and exact Hessian H (B, 6, 6, no graph) of the refinement energy at the
    zero update of (R0, t0); g keeps a graph to coords_world when create_graph."""
    B, dtype = R0.shape[0], R0.dtype
    with torch.enable_grad():
        delta0 = torch.zeros(B, 6, dtype=dtype, device=R0.device, requires_grad=True)
        R, t = apply_update(R0, t0, delta0)
        projected, _ = project(transform(R, t, coords_world), camera)
        error = projected - pixels_xy
        energy = 0.5 * (refinement_energy((error * error).sum(-1), robust_scale_px) * weights).sum()
        g = torch.autograd.grad(energy, delta0, create_graph=True)[0]
        H = torch.stack([torch.autograd.grad(g[:, k].sum(), delta0, retain_graph=True)[0] for k in range(6)], -1)
    return (g if create_graph else g.detach()), H.detach()


def refinement_implicit_step(R0: torch.Tensor, t0: torch.Tensor, pixels_xy: torch.Tensor, coords_world: torch.Tensor,
                             camera: Camera, inlier_mask: torch.Tensor, max_jacobian_entry: float = 10.0,
                             robust_scale_px: float | None = None,
                             newton_iterations: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Attach the exact derivative of a refined pose to the scene coordinates (implicit function).

    R0 (B, 3, 3), t0 (B, 3): refinement result (no graph); pixels_xy (N, 2); coords_world (N, 3)
    with a graph; inlier_mask (B, N), frozen. With E(h, Y) = 1/2 sum_inliers refinement_energy(|r|^2)
    and the optimum g = dE/dh = 0, dh/dY = -H^-1 dg/dY with the full Hessian H (not the Gauss-Newton
    one, so the derivative matches finite differences of the converged optimiser). A few exact
    Newton iterations first polish h0 onto the optimum of the frozen inlier set (LM with IRLS
    weights converges only linearly, and an oscillating inlier set may stop it at the cap). The
    final Newton step h = h0 - H^-1 g(h0, Y) has that derivative and value h0. Hypotheses whose H is
    ill-conditioned or whose per-point Jacobian dh/dY_i has an entry above max_jacobian_entry keep
    their value without a gradient.
    """
    dtype = R0.dtype
    weights = inlier_mask.to(dtype)
    eye6 = torch.eye(6, dtype=dtype, device=R0.device)
    for _ in range(newton_iterations):
        g, H = _energy_gradient_hessian(R0, t0, pixels_xy, coords_world.detach(), camera, weights,
                                        robust_scale_px, create_graph=False)
        with torch.no_grad():
            eig = torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2)))
            positive = (eig[:, 0] > 1e-9 * eig[:, -1].abs()) & torch.isfinite(eig).all(-1)
            step = -torch.linalg.solve(torch.where(positive[:, None, None], H, eye6), g[..., None]).squeeze(-1)
            step = torch.where(positive[:, None] & torch.isfinite(step), step, torch.zeros_like(step))
            R0, t0 = apply_update(R0, t0, step)
    g, H = _energy_gradient_hessian(R0, t0, pixels_xy, coords_world, camera, weights, robust_scale_px,
                                    create_graph=True)  # g: (B, 6), graph to coords_world
    with torch.no_grad():
        eig = torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2)))
        well_conditioned = (eig[:, 0] > 1e-9 * eig[:, -1].abs()) & torch.isfinite(eig).all(-1)
        H_safe = torch.where(well_conditioned[:, None, None], H, eye6)
        # Gauss-Newton estimate of the per-point Jacobian dh/dY_i for the DSAC* guard.
        points_cam = transform(R0, t0, coords_world.detach())
        fx, fy, _, _ = camera
        x, y, z = points_cam.unbind(-1)
        z = torch.where(z > MIN_DEPTH_M, z, torch.full_like(z, MIN_DEPTH_M))
        zero = torch.zeros_like(x)
        dproj = torch.stack([torch.stack([fx / z, zero, -fx * x / z ** 2], -1),
                             torch.stack([zero, fy / z, -fy * y / z ** 2], -1)], -2)  # (B, N, 2, 3)
        Jp = _projection_jacobian(points_cam, camera)  # (B, N, 2, 6)
        per_point = torch.einsum("bij,bnkj,bnkl,blm->bnim", torch.linalg.inv(H_safe), Jp, dproj, R0)
        per_point_max = (per_point.abs().amax((-1, -2)) * weights).amax(-1)
        ok = well_conditioned & torch.isfinite(per_point_max) & (per_point_max <= max_jacobian_entry)
    delta = -torch.linalg.solve(H_safe, g[..., None]).squeeze(-1)
    return apply_update(R0, t0, _guard(delta, ok))


# --------------------------------------------------------------------------------------------
# covariance
# --------------------------------------------------------------------------------------------

def pose_covariance(world_T_cam: torch.Tensor, pixels_xy: torch.Tensor, coords_world: torch.Tensor, camera: Camera,
                    inlier_mask: torch.Tensor, min_sigma_px: float = 0.5, max_variance: float = 1e6) -> torch.Tensor:
    """6x6 covariance of a camera pose from its inliers' reprojection errors (Gauss-Newton).

    world_T_cam (4, 4); pixels_xy (N, 2); coords_world (N, 3); inlier_mask (N,) bool.
    Returns (6, 6) float64 over (x, y, z, rot X, rot Y, rot Z) of the camera in the world frame
    (m^2, rad^2; rotations about the fixed world axes, as ROS PoseWithCovariance expects):
    sigma^2 (J^T J)^-1 with sigma^2 = sum r^2 / (2 n - 6), floored at min_sigma_px^2 so it is never
    zero. Degenerate geometry returns max_variance on the diagonal instead of inf/NaN.
    """
    dtype = torch.float64
    world_T_cam = world_T_cam.to(dtype)
    mask = inlier_mask.bool()
    Y = coords_world.to(dtype)[mask]
    pix = pixels_xy.to(dtype)[mask]
    R_wc, c = world_T_cam[:3, :3], world_T_cam[:3, 3]
    R_cw = R_wc.T
    points_cam = (Y - c) @ R_cw.T
    projected, _ = project(points_cam, camera)
    residual = projected - pix
    n = Y.shape[0]
    fallback = torch.eye(6, dtype=dtype, device=world_T_cam.device) * max_variance
    if n < 4:
        return fallback
    fx, fy, _, _ = camera
    x, y, z = points_cam.unbind(-1)
    z = z.clamp_min(MIN_DEPTH_M)
    # X_cam = R_cw exp(-dtheta) (Y - c - dc): dX/dc = -R_cw, dX/dtheta = R_cw [Y - c]x.
    # For a pixel row g = d(pixel)/dX_cam R_cw (n, 3): d/dc = -g and d/dtheta = g [p]x = g x p.
    p = Y - c
    g_u = (fx / z)[:, None] * R_cw[0] - (fx * x / (z * z))[:, None] * R_cw[2]
    g_v = (fy / z)[:, None] * R_cw[1] - (fy * y / (z * z))[:, None] * R_cw[2]
    J_u = torch.cat([-g_u, torch.linalg.cross(g_u, p)], -1)  # (n, 6)
    J_v = torch.cat([-g_v, torch.linalg.cross(g_v, p)], -1)
    dof = max(2 * n - 6, 1)
    sigma_sq = max(float((residual * residual).sum()) / dof, min_sigma_px ** 2)
    JtJ = J_u.T @ J_u + J_v.T @ J_v
    try:
        cov = sigma_sq * torch.linalg.inv(JtJ)
    except RuntimeError:
        return fallback
    cov = 0.5 * (cov + cov.T)
    if not bool(torch.isfinite(cov).all()) or bool((cov.diagonal() <= 0).any()):
        return fallback
    return cov.clamp(-max_variance, max_variance)
