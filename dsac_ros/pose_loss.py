"""Differentiable pose losses of DSAC (2017) and DSAC*, in PyTorch.

Poses are given as camera-to-world rotation ``R_wc`` (..., 3, 3) and camera centre
``c_w`` (..., 3) in metres; the ground truth broadcasts against the estimates.
"""

from __future__ import annotations

import torch

LOSSES = ("dsacstar", "max_deg_cm")


def rotation_error_deg(R_est: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Angle (deg) of R_est^T R_gt: (..., 3, 3) x (..., 3, 3) -> (...).

    atan2 of the skew and symmetric parts, accurate at small angles where arccos is not; the norm
    carries a tiny epsilon so the gradient at exactly zero error is finite (0) rather than NaN.
    """
    relative = R_est.transpose(-1, -2) @ R_gt
    cos = (relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    skew = torch.stack([relative[..., 2, 1] - relative[..., 1, 2], relative[..., 0, 2] - relative[..., 2, 0],
                        relative[..., 1, 0] - relative[..., 0, 1]], -1)
    sin = torch.sqrt((skew * skew).sum(-1) + 1e-30) / 2.0
    return torch.rad2deg(torch.atan2(sin, cos))


def translation_error_m(c_est: torch.Tensor, c_gt: torch.Tensor) -> torch.Tensor:
    """Distance (m) between camera centres: (..., 3) x (..., 3) -> (...)."""
    diff = c_est - c_gt
    return torch.sqrt((diff * diff).sum(-1) + 1e-30)


def pose_loss(R_wc_est: torch.Tensor, c_est: torch.Tensor, R_wc_gt: torch.Tensor, c_gt: torch.Tensor,
              kind: str = "dsacstar", soft_clamp: float = 100.0) -> torch.Tensor:
    """Per-pose training loss, (...) tensor.

    ``dsacstar``: deg + 100 * m, above ``soft_clamp`` replaced by sqrt(soft_clamp * loss) (continuous
    at the clamp). Its gradient is the true derivative of that expression; dsacstar's C++ code scales
    the clamped-region gradient differently, which we do not copy.
    ``max_deg_cm``: DSAC 2017 / DSAC++ max(rotation error in deg, translation error in cm).
    """
    deg = rotation_error_deg(R_wc_est, R_wc_gt)
    metres = translation_error_m(c_est, c_gt)
    if kind == "dsacstar":
        loss = deg + 100.0 * metres
        # clamp inside the sqrt: the unselected branch must not produce inf * 0 in backward.
        clamped = torch.sqrt(soft_clamp * loss.clamp_min(soft_clamp))
        return torch.where(loss > soft_clamp, clamped, loss)
    if kind == "max_deg_cm":
        return torch.maximum(deg, 100.0 * metres)
    raise ValueError(f"unknown pose loss {kind!r}; choose from {LOSSES}")


def cam_T_world_to_centre(R_cw: torch.Tensor, t_cw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cam_T_world (R (..., 3, 3), t (..., 3)) -> (R_wc (..., 3, 3), camera centre (..., 3))."""
    R_wc = R_cw.transpose(-1, -2)
    return R_wc, -(R_wc @ t_cw[..., None]).squeeze(-1)


__all__ = ["LOSSES", "pose_loss", "rotation_error_deg", "translation_error_m", "cam_T_world_to_centre"]
