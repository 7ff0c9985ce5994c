"""The learned hypothesis score of DSAC (CVPR 2017): a small CNN over the reprojection-error image.

Each hypothesis' per-pixel reprojection errors, on the regular grid the scene coordinates were
predicted on, are clamped at ``max_residual_px`` (100 px in the paper), scaled to [0, 1] and resized
to ``image_size`` x ``image_size`` (40 x 40 in the paper); the CNN maps that image to one scalar score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def error_images(residuals_px: torch.Tensor, grid_hw: tuple[int, int], max_residual_px: float,
                 image_size: int = 40) -> torch.Tensor:
    """(M, H*W) residuals in row-major grid order -> (M, 1, image_size, image_size) in [0, 1]."""
    height, width = grid_hw
    if residuals_px.shape[-1] != height * width:
        raise ValueError(f"grid_hw {grid_hw} does not match {residuals_px.shape[-1]} residuals")
    images = (residuals_px.clamp(0.0, max_residual_px) / max_residual_px).reshape(-1, 1, height, width)
    if (height, width) == (image_size, image_size):
        return images
    # "area" averages when shrinking and repeats when growing: no aliasing of isolated outliers.
    return F.interpolate(images, size=(image_size, image_size), mode="area")


class ScoreCNN(nn.Module):
    """(M, 1, S, S) error images -> (M,) scores (higher = better hypothesis).

    Three stride-2 convolutions, global average pooling and a linear head: ~24k parameters, small
    enough to score 256 hypotheses per frame on a CPU. ``output_scale`` multiplies the head so the
    softmax over scores can be as peaked as DSAC* makes it with alpha = 100.
    """

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64), output_scale: float = 10.0):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(c3, 1)
        self.output_scale = output_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images).mean((-1, -2))
        return self.output_scale * self.head(features).squeeze(-1)
