"""The per-scene head's losses and schedule for fast mapping (ACE-style); the resumable training
loop that uses them is ``dsac_ros.mapping.train_head_stage``.

Two losses, chosen by what the recording has:
- ``coords`` (RGB-D, or RGB + 3D model): Euclidean distance to ground-truth scene coordinates.
- ``reprojection`` (RGB + poses only): reprojection error of the predicted coordinate in its
  frame, robust and with a threshold annealed from ``clamp_start_px`` to ``clamp_end_px`` (ACE);
  predictions behind the camera, too close or too far are pulled towards a proxy point 10 m
  along the pixel's ray (DSAC*'s depth constraints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Optional

import torch
from torch import nn

LOSSES = ("coords", "reprojection")


@dataclass
class HeadTrainingOptions:
    """Loss and schedule of head training (progress is the fraction of the stage's budget used)."""

    loss: str = "coords"
    # One-cycle schedule over the budget (ACE: 5e-4 .. 5e-3).
    lr_min: float = 5e-4
    lr_max: float = 5e-3
    warmup_fraction: float = 0.1
    # Reprojection loss (ACE): robust threshold annealed over the budget, pixels.
    clamp_start_px: float = 50.0
    clamp_end_px: float = 1.0
    min_depth_m: float = 0.1
    max_depth_m: float = 1000.0
    max_reprojection_px: float = 1000.0
    proxy_depth_m: float = 10.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown head loss {self.loss!r}; choose from {LOSSES}")


def one_cycle_lr(progress: float, options: HeadTrainingOptions) -> float:
    """Learning rate at ``progress`` in [0, 1] of the budget: linear warm-up, cosine decay."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < options.warmup_fraction:
        return options.lr_min + (options.lr_max - options.lr_min) * progress / options.warmup_fraction
    decay = (progress - options.warmup_fraction) / max(1e-9, 1.0 - options.warmup_fraction)
    return options.lr_min + 0.5 * (options.lr_max - options.lr_min) * (1.0 + math.cos(math.pi * decay))


def annealed_clamp_px(progress: float, options: HeadTrainingOptions) -> float:
    """ACE's reprojection clamp at ``progress`` in [0, 1]: geometric from clamp_start_px to clamp_end_px."""
    return options.clamp_start_px * (options.clamp_end_px / options.clamp_start_px) ** progress


def coords_loss(pred_world_m: torch.Tensor, target_world_m: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance (m). pred, target: (B, 3); rows with a NaN target are ignored."""
    valid = torch.isfinite(target_world_m).all(dim=1)
    if not bool(valid.any()):
        return pred_world_m.sum() * 0.0
    return (pred_world_m[valid] - target_world_m[valid]).norm(dim=1).mean()


def reprojection_loss(pred_world_m: torch.Tensor, pixels_xy: torch.Tensor, cam_T_world: torch.Tensor,
                      K: torch.Tensor, clamp_px: float, options: HeadTrainingOptions) -> torch.Tensor:
    """ACE-style robust reprojection loss with DSAC*'s depth constraints.

    pred_world_m: (B, 3); pixels_xy: (B, 2) px; cam_T_world: (B, 4, 4); K: (B, 3, 3).
    Valid predictions (depth within limits, error below ``max_reprojection_px``) get
    ``clamp * tanh(err / clamp)``, so errors far above the clamp stop pulling; invalid ones
    are pulled (Euclidean, metres) to a proxy point ``proxy_depth_m`` along the pixel's ray.
    """
    points_cam = (cam_T_world[:, :3, :3] @ pred_world_m.unsqueeze(-1)).squeeze(-1) + cam_T_world[:, :3, 3]
    depth = points_cam[:, 2]
    safe_depth = depth.clamp(min=options.min_depth_m)
    projected = (K[:, :2, :2] @ (points_cam[:, :2] / safe_depth.unsqueeze(1)).unsqueeze(-1)).squeeze(-1) + K[:, :2, 2]
    error_px = (projected - pixels_xy).norm(dim=1)
    valid = (depth > options.min_depth_m) & (depth < options.max_depth_m) & (error_px < options.max_reprojection_px)
    loss = torch.zeros_like(error_px)
    loss[valid] = clamp_px * torch.tanh(error_px[valid] / clamp_px)
    if bool((~valid).any()):
        ray = torch.stack([(pixels_xy[:, 0] - K[:, 0, 2]) / K[:, 0, 0],
                           (pixels_xy[:, 1] - K[:, 1, 2]) / K[:, 1, 1],
                           torch.ones_like(depth)], dim=1)
        proxy_cam = ray * options.proxy_depth_m
        loss[~valid] = (points_cam[~valid] - proxy_cam[~valid]).norm(dim=1)
    return loss.mean()


def _as_matrix(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    return conv.weight.view(conv.out_channels, conv.in_channels), conv.bias


def head_forward_flat(head: nn.Module, features: torch.Tensor, exclude_frame: Optional[int] = None) -> torch.Tensor:
    """The head applied to (B, C) feature rows -> (B, 3) offsets.

    MLP head: as matrix products, the same result as ``head(features[:, :, None, None])`` and about
    twice as fast on a CPU, where a 1x1 convolution over (B, C, 1, 1) tensors does not reach the
    GEMM kernels. Memory head: the rows are ONE image's cells (retrieval needs the whole view);
    ``exclude_frame`` leaves that memory frame out (a mapping frame must not find itself).
    """
    if hasattr(head, "lookup"):
        return head.lookup(features, exclude_frame=exclude_frame)
    x = torch.relu(nn.functional.linear(features, *_as_matrix(head.inp)))
    for block in head.blocks:
        inner = torch.relu(nn.functional.linear(x, *_as_matrix(block.conv1)))
        x = torch.relu(x + nn.functional.linear(inner, *_as_matrix(block.conv2)))
    return nn.functional.linear(x, *_as_matrix(head.out))
