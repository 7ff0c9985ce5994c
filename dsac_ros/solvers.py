"""Batched minimal solvers and refinement for DSAC, in PyTorch.

Poses inside this module are ``cam_T_world`` split into a rotation ``R`` (..., 3, 3) and a
translation ``t`` (..., 3): a world point Y maps to the camera frame as ``R @ Y + t``.
Pixels follow the OpenCV convention (x right, y down, pixel centres at integers).

Every solver is vectorised over a leading batch dimension (hypotheses), so the hot path has no
Python loop over hypotheses. Minimal solvers and refinement run under ``torch.no_grad``; their
gradients (for end-to-end training) come from the implicit-function steps ``minimal_set_implicit_step``
and ``refinement_implicit_step``, which leave the value unchanged at a solution and carry the exact
derivative of that solution with respect to the scene coordinates.

Intrinsics are passed as ``camera = (fx_px, fy_px, cx_px, cy_px)`` python floats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

Camera = tuple[float, float, float, float]

# Points closer than this to the camera plane are never inliers: their reprojection Jacobian
# explodes (DSAC* uses the same 0.1 m minimum depth).
MIN_DEPTH_M = 0.1
# Gauss-Newton polish iterations of the P3P depths (1e-10 relative pose error with 2; cheap).
POLISH = 2


# --------------------------------------------------------------------------------------------
# small linear algebra helpers (closed forms beat batched LAPACK calls for 3x3 on the CPU)
# --------------------------------------------------------------------------------------------

def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]x."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([
        torch.stack([zero, -z, y], -1),
        torch.stack([z, zero, -x], -1),
        torch.stack([-y, x, zero], -1),
    ], -2)


def so3_exp(rotation_vector: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vector (rad) -> (..., 3, 3) rotation (Rodrigues).

    Differentiable everywhere, including at zero (Taylor branch, no sqrt of 0 in either branch),
    which the implicit steps rely on: they evaluate and differentiate exp at a zero update.
    """
    theta_sq = (rotation_vector * rotation_vector).sum(-1)
    small = theta_sq < 1e-8
    theta_sq_safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = torch.sqrt(theta_sq_safe)
    a = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(theta)) / theta_sq_safe)
    k = skew(rotation_vector)
    eye = torch.eye(3, dtype=rotation_vector.dtype, device=rotation_vector.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def det3(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (...) determinant."""
    return (m[..., 0, :] * torch.cross(m[..., 1, :], m[..., 2, :], dim=-1)).sum(-1)


def adjugate3(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3, 3) adjugate, so that m @ adj(m) = det(m) I."""
    r0, r1, r2 = m.unbind(-2)
    return torch.stack([torch.cross(r1, r2, dim=-1), torch.cross(r2, r0, dim=-1),
                        torch.cross(r0, r1, dim=-1)], -1)


def bearings_from_pixels(pixels_xy: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(..., 2) pixels -> (..., 3) unit bearing vectors in the camera frame."""
    fx, fy, cx, cy = camera
    rays = torch.stack([(pixels_xy[..., 0] - cx) / fx, (pixels_xy[..., 1] - cy) / fy,
                        torch.ones_like(pixels_xy[..., 0])], -1)
    return rays / rays.norm(dim=-1, keepdim=True)


def transform(R: torch.Tensor, t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """R (B, 3, 3), t (B, 3), points (N, 3) or (B, N, 3) -> (B, N, 3) = R @ p + t."""
    return torch.matmul(points, R.transpose(-1, -2)) + t[..., None, :]


def project(points_cam: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 3) camera-frame points -> ((..., 2) pixels, (...) depth-valid mask).

    Depths below MIN_DEPTH_M are replaced by MIN_DEPTH_M before dividing, so the pixels stay
    finite; the mask tells the caller to treat those points as outliers.
    """
    fx, fy, cx, cy = camera
    z = points_cam[..., 2]
    in_front = z > MIN_DEPTH_M
    z_safe = torch.where(in_front, z, torch.full_like(z, MIN_DEPTH_M))
    pixels = torch.stack([fx * points_cam[..., 0] / z_safe + cx, fy * points_cam[..., 1] / z_safe + cy], -1)
    return pixels, in_front


def reprojection_residuals(R: torch.Tensor, t: torch.Tensor, pixels_xy: torch.Tensor, coords_world: torch.Tensor,
                           camera: Camera, max_residual_px: float) -> torch.Tensor:
    """Reprojection error (px) of every point under every hypothesis, clamped at max_residual_px.

    R (B, 3, 3), t (B, 3), pixels_xy (N, 2), coords_world (N, 3) -> (B, N), in R's dtype. Points
    behind the camera (or closer than MIN_DEPTH_M) get max_residual_px. The projection K (R Y + t)
    of all hypotheses is one (3B x 3) @ (3 x N) matrix product: the scoring hot path.
    """
    fx, fy, cx, cy = camera
    B, N = R.shape[0], coords_world.shape[0]
    KR = torch.stack([fx * R[:, 0] + cx * R[:, 2], fy * R[:, 1] + cy * R[:, 2], R[:, 2]], 1)  # (B, 3, 3)
    Kt = torch.stack([fx * t[:, 0] + cx * t[:, 2], fy * t[:, 1] + cy * t[:, 2], t[:, 2]], 1)  # (B, 3)
    # contiguous (3, N): a product with the strided transpose is 10x slower on the CPU
    homogeneous = torch.addmm(Kt.reshape(3 * B, 1), KR.reshape(3 * B, 3),
                              coords_world.to(R.dtype).T.contiguous()).reshape(B, 3, N)
    uz, vz, z = homogeneous.unbind(1)
    in_front = z > MIN_DEPTH_M
    inv_z = 1.0 / z.clamp_min(MIN_DEPTH_M)
    pixels = pixels_xy.to(R.dtype)
    du = uz * inv_z - pixels[:, 0]
    dv = vz * inv_z - pixels[:, 1]
    # sqrt of a clamped square: finite gradient even at a zero residual.
    residual = torch.sqrt((du * du).addcmul_(dv, dv).clamp_min_(1e-12)).clamp_max(max_residual_px)
    return torch.where(in_front, residual, max_residual_px)


# --------------------------------------------------------------------------------------------
# P3P (Lambda Twist formulation: degenerate member of the conic pencil -> line pair -> quadratic)
# --------------------------------------------------------------------------------------------

def _real_cubic_root(c3, c2, c1, c0):
    """One real root of c3 g^3 + c2 g^2 + c1 g + c0 (largest when three are real), Newton-polished."""
    p2, p1, p0 = c2 / c3, c1 / c3, c0 / c3
    P = p1 - p2 * p2 / 3.0
    Q = 2.0 * p2 ** 3 / 27.0 - p2 * p1 / 3.0 + p0
    disc = (Q / 2.0) ** 2 + (P / 3.0) ** 3
    sq = torch.sqrt(disc.clamp_min(0.0))
    a, b = -Q / 2.0 + sq, -Q / 2.0 - sq
    one_root = torch.sign(a) * a.abs().pow(1.0 / 3.0) + torch.sign(b) * b.abs().pow(1.0 / 3.0)
    P_neg = torch.minimum(P, torch.full_like(P, -1e-300))
    m = 2.0 * torch.sqrt(-P_neg / 3.0)
    arg = (3.0 * Q / (P_neg * m)).clamp(-1.0, 1.0)
    three_root = m * torch.cos(torch.acos(arg) / 3.0)
    g = torch.where(disc > 0, one_root, three_root) - p2 / 3.0
    for _ in range(2):
        f = ((g + p2) * g + p1) * g + p0
        df = (3.0 * g + 2.0 * p2) * g + p1
        step = f / torch.where(df.abs() > 1e-300, df, torch.ones_like(df))
        g = g - step
    return g


def _cross(a, b):
    """Cross product of 3-tuples of tensors."""
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _sym_det(s):
    """Determinant of a symmetric 3x3 given as (s00, s11, s22, s01, s02, s12)."""
    s00, s11, s22, s01, s02, s12 = s
    return s00 * (s11 * s22 - s12 * s12) - s01 * (s01 * s22 - s12 * s02) + s02 * (s01 * s12 - s11 * s02)


def _sym_adj(s):
    """Adjugate (symmetric) of a symmetric 3x3, same 6-tuple layout."""
    s00, s11, s22, s01, s02, s12 = s
    return (s11 * s22 - s12 * s12, s00 * s22 - s02 * s02, s00 * s11 - s01 * s01,
            s02 * s12 - s01 * s22, s01 * s12 - s02 * s11, s01 * s02 - s00 * s12)


def _sym_inner(a, b):
    """tr(A B) for symmetric A, B."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + 2.0 * (a[3] * b[3] + a[4] * b[4] + a[5] * b[5])


def _sym_null_vector(s):
    """Unit null vector of a rank-2 symmetric 3x3: the longest cross product of two rows."""
    s00, s11, s22, s01, s02, s12 = s
    r0, r1, r2 = (s00, s01, s02), (s01, s11, s12), (s02, s12, s22)
    best = _cross(r0, r1)
    best_sq = _dot(best, best)
    for c in (_cross(r0, r2), _cross(r1, r2)):
        c_sq = _dot(c, c)
        better = c_sq > best_sq
        best = tuple(torch.where(better, ci, bi) for ci, bi in zip(c, best))
        best_sq = torch.where(better, c_sq, best_sq)
    norm = torch.sqrt(best_sq).clamp_min(1e-300)
    return tuple(b / norm for b in best)


def p3p_depths(bearings: torch.Tensor, points_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depths of the three points for all P3P solutions of many minimal sets at once.

    bearings (B, 3, 3): unit bearing vectors (rows) of three pixels; points_world (B, 3, 3): the
    matching world points (rows). Returns depths (B, 4, 3), a (B, 4) validity mask (real, positive,
    congruent, non-collinear) and the inverse world triad (B, 3, 3) that ``pose_from_depths`` needs.

    Follows the Lambda Twist idea (Persson & Nordberg, ECCV 2018): the depths Lambda satisfy
    three quadrics; one degenerate member of their pencil is a pair of planes through the origin,
    which turns the problem into one quadratic per plane. Depths are then polished by Gauss-Newton.
    Written on scalar components (B,) rather than small matrices: on the CPU the cost of a batch is
    the number of tensor operations, and stacking/cross-product kernels on (B, 3, 3) are slow.
    """
    dtype, device = bearings.dtype, bearings.device
    y = [tuple(bearings[:, i, k] for k in range(3)) for i in range(3)]
    x = [tuple(points_world[:, i, k] for k in range(3)) for i in range(3)]

    def dist_sq(p, q):
        d = (p[0] - q[0], p[1] - q[1], p[2] - q[2])
        return _dot(d, d)

    a12, a13, a23 = dist_sq(x[0], x[1]), dist_sq(x[0], x[2]), dist_sq(x[1], x[2])
    b12, b13, b23 = _dot(y[0], y[1]), _dot(y[0], y[2]), _dot(y[1], y[2])
    zero = torch.zeros_like(a12)
    # Lambda^T M_ij Lambda = a_ij; D1 = a23 M12 - a12 M23, D2 = a23 M13 - a13 M23 (6-tuples).
    D1 = (a23, a23 - a12, -a12, -a23 * b12, zero, a12 * b23)
    D2 = (a23, -a13, a23 - a13, zero, -a23 * b13, a13 * b23)
    # det(D1 + g D2) = det D1 + g tr(adj(D1) D2) + g^2 tr(D1 adj(D2)) + g^3 det D2
    c3 = _sym_det(D2)
    c2 = _sym_inner(D1, _sym_adj(D2))
    c1 = _sym_inner(_sym_adj(D1), D2)
    c0 = _sym_det(D1)
    c3_ok = c3.abs() > 1e-14 * (c0.abs() + c1.abs() + c2.abs() + c3.abs() + 1e-300)
    gamma = _real_cubic_root(torch.where(c3_ok, c3, torch.ones_like(c3)), c2, c1, c0)
    D0 = tuple(d1 + gamma * d2 for d1, d2 in zip(D1, D2))

    # Closed-form eigen-decomposition of the rank-2 symmetric D0: the nonzero eigenvalues are the
    # roots of s^2 - tr s + m2 = 0 (m2: sum of principal 2x2 minors).
    trace = D0[0] + D0[1] + D0[2]
    adj0 = _sym_adj(D0)
    m2 = adj0[0] + adj0[1] + adj0[2]
    root = torch.sqrt((trace * trace - 4.0 * m2).clamp_min(0.0))
    sigma_pos, sigma_neg = (trace + root) / 2.0, (trace - root) / 2.0
    line_pair_real = (m2 < 0) & c3_ok  # eigenvalues of opposite sign <=> real pair of planes
    e_pos = _sym_null_vector((D0[0] - sigma_pos, D0[1] - sigma_pos, D0[2] - sigma_pos, D0[3], D0[4], D0[5]))
    e_neg = _sym_null_vector((D0[0] - sigma_neg, D0[1] - sigma_neg, D0[2] - sigma_neg, D0[3], D0[4], D0[5]))
    ratio = torch.sqrt((-sigma_neg / torch.where(sigma_pos > 0, sigma_pos, torch.ones_like(sigma_pos))).clamp_min(0.0))

    # sigma_pos (e_pos . L)^2 + sigma_neg (e_neg . L)^2 = 0  =>  (e_pos -+ ratio e_neg) . L = 0.
    # Both signs side by side in a trailing dimension of 2.
    sign = torch.tensor([1.0, -1.0], dtype=dtype, device=device)
    v = tuple(ep[:, None] - sign * (ratio * en)[:, None] for ep, en in zip(e_pos, e_neg))
    v0_ok = v[0].abs() > 1e-12
    v0 = torch.where(v0_ok, v[0], torch.ones_like(v[0]))
    w0, w1 = -v[1] / v0, -v[2] / v0  # lambda1 = w0 lambda2 + w1 lambda3
    A13, A23, B13, B23 = a13[:, None], a23[:, None], b13[:, None], b23[:, None]
    # tau = lambda2 / lambda3; eliminating lambda3^2 between the (1,3) and (2,3) equations:
    qa = A13 - A23 * w0 * w0
    qb = -2.0 * A13 * B23 - A23 * (2.0 * w0 * w1 - 2.0 * B13 * w0)
    qc = A13 - A23 * (w1 * w1 - 2.0 * B13 * w1 + 1.0)
    disc = qb * qb - 4.0 * qa * qc
    sq = torch.sqrt(disc.clamp_min(0.0))
    q = -0.5 * (qb + torch.where(qb >= 0, sq, -sq))  # numerically stable quadratic roots
    tau = torch.cat([q / torch.where(qa.abs() > 1e-300, qa, torch.full_like(qa, 1e-300)),
                     qc / torch.where(q.abs() > 1e-300, q, torch.full_like(q, 1e-300))], -1)  # (B, 4)
    ok = torch.cat([disc >= 0, disc >= 0], -1) & torch.cat([v0_ok, v0_ok], -1) & line_pair_real[:, None] & (tau > 0)
    w0, w1 = torch.cat([w0, w0], -1), torch.cat([w1, w1], -1)
    l3 = torch.sqrt(A23 / (tau * tau - 2.0 * B23 * tau + 1.0).clamp_min(1e-300))
    l2 = tau * l3
    l1 = w0 * l2 + w1 * l3

    # Gauss-Newton polish of the depths on the three distance equations (Cramer's rule).
    A12, B12 = a12[:, None], b12[:, None]
    for _ in range(POLISH):
        f1 = l1 * l1 + l2 * l2 - 2.0 * B12 * l1 * l2 - A12
        f2 = l1 * l1 + l3 * l3 - 2.0 * B13 * l1 * l3 - A13
        f3 = l2 * l2 + l3 * l3 - 2.0 * B23 * l2 * l3 - A23
        j11, j12 = 2.0 * (l1 - B12 * l2), 2.0 * (l2 - B12 * l1)
        j21, j23 = 2.0 * (l1 - B13 * l3), 2.0 * (l3 - B13 * l1)
        j32, j33 = 2.0 * (l2 - B23 * l3), 2.0 * (l3 - B23 * l2)
        # J = [[j11, j12, 0], [j21, 0, j23], [0, j32, j33]]
        det = -j11 * j23 * j32 - j12 * j21 * j33
        scale = (j11.abs() + j12.abs() + j21.abs() + j23.abs() + j32.abs() + j33.abs()) ** 3
        good = det.abs() > 1e-12 * scale
        inv_det = torch.where(good, 1.0 / torch.where(good, det, torch.ones_like(det)), torch.zeros_like(det))
        d1 = (-j23 * j32 * f1 - j12 * j33 * f2 + j12 * j23 * f3) * inv_det
        d2 = (-j21 * j33 * f1 + j11 * j33 * f2 - j11 * j23 * f3) * inv_det
        d3 = (j21 * j32 * f1 - j11 * j32 * f2 - j12 * j21 * f3) * inv_det
        l1, l2, l3 = l1 - d1, l2 - d2, l3 - d3
    # Depths that satisfy the three distance equations make the camera triangle congruent to the
    # world triangle, so R below is a proper rotation: checking the equations replaces an
    # orthonormality test on R.
    f1 = l1 * l1 + l2 * l2 - 2.0 * B12 * l1 * l2 - A12
    f2 = l1 * l1 + l3 * l3 - 2.0 * B13 * l1 * l3 - A13
    f3 = l2 * l2 + l3 * l3 - 2.0 * B23 * l2 * l3 - A23
    congruent = (f1.abs() <= 1e-6 * A12) & (f2.abs() <= 1e-6 * A13) & (f3.abs() <= 1e-6 * A23)
    ok = ok & congruent & (l1 > 0) & (l2 > 0) & (l3 > 0)

    # R maps the world triad (d1, d2, d1 x d2) onto the camera triad: R = F_cam F_world^-1, with
    # F_world^-1 from cross products (rows (b x c, c x a, a x b) / det for columns a, b, c).
    dw1 = tuple(p - q for p, q in zip(x[1], x[0]))
    dw2 = tuple(p - q for p, q in zip(x[2], x[0]))
    nw = _cross(dw1, dw2)
    det_world = _dot(nw, nw)  # = dw1 . (dw2 x nw)
    non_collinear = det_world > 1e-6 * (_dot(dw1, dw1) * _dot(dw2, dw2))
    inv_det = 1.0 / torch.where(non_collinear, det_world, torch.ones_like(det_world))
    F_world_inv = torch.stack([torch.stack(_cross(dw2, nw), -1), torch.stack(_cross(nw, dw1), -1),
                               torch.stack(nw, -1)], -2) * inv_det[:, None, None]  # (B, 3, 3)
    lam = torch.stack([l1, l2, l3], -1)  # (B, 4, 3)
    ok = ok & non_collinear[:, None] & torch.isfinite(lam).all(-1)
    return torch.where(ok[..., None], lam, torch.ones_like(lam)), ok, F_world_inv


def _camera_triad(depths: torch.Tensor, bearings: torch.Tensor):
    """depths (..., 3), bearings (..., 3, 3) -> first camera point (..., 3) and triad columns
    (dc1, dc2, dc1 x dc2), each (..., 3)."""
    points_cam = depths[..., None] * bearings
    dc1 = points_cam[..., 1, :] - points_cam[..., 0, :]
    dc2 = points_cam[..., 2, :] - points_cam[..., 0, :]
    return points_cam[..., 0, :], dc1, dc2, torch.linalg.cross(dc1, dc2)


def transform_by_depths(depths: torch.Tensor, bearings: torch.Tensor, F_world_inv: torch.Tensor,
                        points_world: torch.Tensor, extra_world: torch.Tensor) -> torch.Tensor:
    """Camera coordinates of an extra world point under P3P solutions, without forming R.

    depths (B, S, 3) for S solutions; bearings, points_world (B, 3, 3); F_world_inv (B, 3, 3);
    extra_world (B, 3) -> (B, S, 3). R x + t = F_cam F_world^-1 (x - x1) + X1_cam, and the
    coefficients F_world^-1 (x - x1) are shared by all solutions of a set.
    """
    coefficients = (F_world_inv @ (extra_world - points_world[:, 0])[..., None]).squeeze(-1)[:, None]  # (B, 1, 3)
    first, dc1, dc2, normal = _camera_triad(depths, bearings[:, None])
    return first + coefficients[..., 0:1] * dc1 + coefficients[..., 1:2] * dc2 + coefficients[..., 2:3] * normal


def pose_from_depths(depths: torch.Tensor, bearings: torch.Tensor, F_world_inv: torch.Tensor,
                     points_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cam_T_world of one P3P solution per set: depths (B, 3), bearings, points_world (B, 3, 3),
    F_world_inv (B, 3, 3) -> R (B, 3, 3), t (B, 3), finite (B,)."""
    first, dc1, dc2, normal = _camera_triad(depths, bearings)
    R = torch.stack([dc1, dc2, normal], -1) @ F_world_inv
    t = first - (R @ points_world[:, 0, :, None]).squeeze(-1)
    finite = torch.isfinite(R).all(-1).all(-1) & torch.isfinite(t).all(-1)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return torch.where(finite[:, None, None], R, eye), torch.where(finite[:, None], t, torch.zeros_like(t)), finite


def p3p(bearings: torch.Tensor, points_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All P3P solutions of many minimal sets at once.

    bearings (B, 3, 3): unit bearing vectors (rows) of three pixels; points_world (B, 3, 3): the
    matching world points (rows). Returns R (B, 4, 3, 3), t (B, 4, 3) of cam_T_world and a
    (B, 4) validity mask; invalid slots hold the identity. See ``p3p_depths``.
    """
    B = bearings.shape[0]
    depths, ok, F_world_inv = p3p_depths(bearings, points_world)
    R, t, finite = pose_from_depths(depths.reshape(B * 4, 3), bearings.repeat_interleave(4, 0),
                                    F_world_inv.repeat_interleave(4, 0), points_world.repeat_interleave(4, 0))
    valid = ok & finite.reshape(B, 4)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    R = torch.where(valid[..., None, None], R.reshape(B, 4, 3, 3), eye)
    t = torch.where(valid[..., None], t.reshape(B, 4, 3), torch.zeros_like(t.reshape(B, 4, 3)))
    return R, t, valid


# --------------------------------------------------------------------------------------------
# rigid 3D-3D alignment (RGB-D variant)
# --------------------------------------------------------------------------------------------

def rigid_from_three_points(points_world: torch.Tensor, points_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimal 3-point rigid alignment for many sets at once (triad method, closed form).

    points_world, points_cam (B, 3, 3) rows -> R (B, 3, 3), t (B, 3) with cam = R world + t, and a
    (B,) mask that is False for collinear or non-finite sets. Exact for noise-free data; the
    least-squares fit on inliers (``kabsch``) follows in refinement. No batched SVD: it is the hot path.
    """
    def frame(p):
        c = p.mean(-2)
        e1 = p[..., 1, :] - p[..., 0, :]
        e3 = torch.cross(e1, p[..., 2, :] - p[..., 0, :], dim=-1)
        n1, n3 = e1.norm(dim=-1), e3.norm(dim=-1)
        ok = n3 > 1e-3 * (n1 * n1 + 1e-300)
        e1 = e1 / n1.clamp_min(1e-300)[..., None]
        e3 = e3 / n3.clamp_min(1e-300)[..., None]
        return torch.stack([e1, torch.cross(e3, e1, dim=-1), e3], -1), c, ok

    F_world, c_world, ok_world = frame(points_world)
    F_cam, c_cam, ok_cam = frame(points_cam)
    R = F_cam @ F_world.transpose(-1, -2)
    t = c_cam - (R @ c_world[..., None]).squeeze(-1)
    valid = ok_world & ok_cam & torch.isfinite(R).all(-1).all(-1) & torch.isfinite(t).all(-1)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return torch.where(valid[..., None, None], R, eye.expand_as(R)), torch.where(valid[..., None], t, torch.zeros_like(t)), valid


def kabsch(points_world: torch.Tensor, points_cam: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted least-squares rigid alignment (Kabsch with reflection fix), differentiable.

    points_world, points_cam (N, 3) or (B, N, 3); weights (B, N) >= 0 -> R (B, 3, 3), t (B, 3),
    valid (B,) (False when fewer than 3 weighted points or the fit is not finite).
    """
    w = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    c_world = (w[..., None] * points_world).sum(-2)
    c_cam = (w[..., None] * points_cam).sum(-2)
    dw = points_world - c_world[..., None, :]
    dc = points_cam - c_cam[..., None, :]
    cov = (dc * w[..., None]).transpose(-1, -2) @ dw  # (B, 3, 3) = sum w dc dw^T
    U, _, Vh = torch.linalg.svd(cov)
    d = torch.sign(det3(U @ Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    S = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ S @ Vh
    t = c_cam - (R @ c_world[..., None]).squeeze(-1)
    valid = ((weights > 0).sum(-1) >= 3) & torch.isfinite(R).all(-1).all(-1) & torch.isfinite(t).all(-1)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return torch.where(valid[..., None, None], R, eye.expand_as(R)), torch.where(valid[..., None], t, torch.zeros_like(t)), valid


def alignment_residuals(R: torch.Tensor, t: torch.Tensor, coords_world: torch.Tensor, coords_cam: torch.Tensor,
                        max_residual_m: float) -> torch.Tensor:
    """3D distance (m) between transformed world points and depth points: (B, N), clamped.

    coords_cam rows that are not finite (no depth) get max_residual_m.
    """
    diff = transform(R, t, coords_world) - coords_cam
    residual = torch.sqrt((diff * diff).sum(-1).clamp_min(1e-12))
    clamp = torch.full_like(residual, max_residual_m)
    return torch.where(torch.isfinite(residual), torch.minimum(residual, clamp), clamp)


# --------------------------------------------------------------------------------------------
# refinement
# --------------------------------------------------------------------------------------------

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
