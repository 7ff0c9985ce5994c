"""Training a per-scene head on a pixel buffer: the inner loop of fast mapping (ACE-style).

Two losses, chosen by what the recording has:
- ``coords`` (RGB-D, or RGB + 3D model): Euclidean distance to ground-truth scene coordinates.
- ``reprojection`` (RGB + poses only): reprojection error of the predicted coordinate in its
  frame, robust and with a threshold annealed from ``clamp_start_px`` to ``clamp_end_px`` (ACE);
  predictions behind the camera, too close or too far are pulled towards a proxy point 10 m
  along the pixel's ray (DSAC*'s depth constraints).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from dsac_ros.buffer import PixelBuffer

LOSSES = ("coords", "reprojection")


@dataclass
class HeadTrainingOptions:
    """Budget and schedule. Training stops at ``steps`` or after ``seconds``, whichever first."""

    loss: str = "coords"
    steps: int = 100_000
    seconds: Optional[float] = None
    batch_size: int = 4096
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
    seed: int = 0


@dataclass
class HeadTrainingHistory:
    steps: int = 0
    seconds: float = 0.0
    samples_seen: int = 0
    losses: list = field(default_factory=list)  # (step, loss) every ``log_every`` steps


def one_cycle_lr(progress: float, options: HeadTrainingOptions) -> float:
    """Learning rate at ``progress`` in [0, 1] of the budget: linear warm-up, cosine decay."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < options.warmup_fraction:
        return options.lr_min + (options.lr_max - options.lr_min) * progress / options.warmup_fraction
    decay = (progress - options.warmup_fraction) / max(1e-9, 1.0 - options.warmup_fraction)
    return options.lr_min + 0.5 * (options.lr_max - options.lr_min) * (1.0 + math.cos(math.pi * decay))


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


def head_forward_flat(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The 1x1-conv head applied to (B, C) feature rows -> (B, 3) offsets, as matrix products.

    Same weights and result as ``head(features[:, :, None, None])``; about twice as fast on a
    CPU, where a 1x1 convolution over (B, C, 1, 1) tensors does not reach the GEMM kernels.
    """
    x = torch.relu(nn.functional.linear(features, *_as_matrix(head.inp)))
    for block in head.blocks:
        inner = torch.relu(nn.functional.linear(x, *_as_matrix(block.conv1)))
        x = torch.relu(x + nn.functional.linear(inner, *_as_matrix(block.conv2)))
    return nn.functional.linear(x, *_as_matrix(head.out))


def train_head(head: nn.Module, buffer: PixelBuffer, scene_center_m: torch.Tensor,
               options: HeadTrainingOptions = HeadTrainingOptions(),
               device: torch.device = torch.device("cpu"),
               on_step: Optional[Callable[[int, float, float], None]] = None,
               log_every: int = 50) -> HeadTrainingHistory:
    """Train ``head`` in place on random rows of ``buffer``.

    head: a ``network.Head`` (1x1 convs: inp, blocks of conv1/conv2, out) predicting offsets from
    ``scene_center_m`` ((3,) metres).
    on_step(step, loss, progress) is called every ``log_every`` steps (progress bars, validation).
    """
    if options.loss not in LOSSES:
        raise ValueError(f"unknown head loss {options.loss!r}; choose from {LOSSES}")
    rows = torch.nonzero(buffer.has_depth()).squeeze(1) if options.loss == "coords" else torch.arange(len(buffer))
    if len(rows) == 0:
        raise ValueError("the buffer has no usable rows (no valid depth for the coords loss)")
    head.to(device).train()
    center = scene_center_m.to(device=device, dtype=torch.float32).view(1, 3)
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr_min, weight_decay=0.0)
    generator = torch.Generator().manual_seed(options.seed)
    history = HeadTrainingHistory()
    start = time.monotonic()
    batch = min(options.batch_size, len(rows))
    for step in range(options.steps):
        elapsed = time.monotonic() - start
        progress = step / options.steps
        if options.seconds is not None:
            if elapsed >= options.seconds:
                break
            progress = max(progress, elapsed / options.seconds)
        for group in optimizer.param_groups:
            group["lr"] = one_cycle_lr(progress, options)
        pick = rows[torch.randint(len(rows), (batch,), generator=generator)]
        features = buffer.features[pick].to(device=device, dtype=torch.float32)
        pred = head_forward_flat(head, features) + center
        if options.loss == "coords":
            loss = coords_loss(pred, buffer.coords_world_m[pick].to(device))
        else:
            frames = buffer.frame_index[pick].long()
            clamp = options.clamp_start_px * (options.clamp_end_px / options.clamp_start_px) ** progress
            loss = reprojection_loss(pred, buffer.pixels_xy[pick].to(device), buffer.cam_T_world[frames].to(device),
                                     buffer.intrinsics_K[frames].to(device), clamp, options)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.steps = step + 1
        history.samples_seen += batch
        if step % log_every == 0:
            value = float(loss.detach())
            history.losses.append((step, value))
            if on_step is not None:
                on_step(step, value, progress)
    history.seconds = time.monotonic() - start
    head.eval()
    return history
