"""Batched minimal solvers for DSAC, in PyTorch (refinement and implicit gradients: ``dsac_ros.refinement``).

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
