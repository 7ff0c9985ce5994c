"""The scene coordinate network: a scene-agnostic encoder and a per-scene head (ACE-style split).

    image (any size) --prepare_input--> grayscale (1, 1, h, w), h = the map's input height
        --Encoder--> features (1, C, h/8, w/8) --Head--> offsets (1, 3, h/8, w/8)
        + scene centre (metres, stored in the map) = scene coordinates in the world frame.

Output cell (x, y) predicts the scene coordinate seen at pixel (8x + 4, 8y + 4) of the network
input (DSAC* convention). ``cell_centers_px`` maps those centres back to the pixels of the
original image, so RANSAC runs with the caller's own intrinsics and thresholds in its pixels.

The encoder is fully convolutional with output stride 8 and knows nothing about the scene, so
fast mapping can freeze it and train only the 1x1-convolution head on buffered features.
Architectures are plain dicts (``NETWORK_CONFIGS``) stored in the map file, so a map always
rebuilds the network that produced its weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from dsac_ros.camera import Intrinsics

OUTPUT_STRIDE = 8
# DSAC* normalisation of the grayscale image in [0, 1].
DEFAULT_NORMALIZATION = {"color": "gray", "mean": 0.4, "std": 0.25}

# Named architectures. A config is self-contained: the map file stores the dict, not the name.
#   encoder.channels: widths of the full-resolution conv and of the three stride-2 convs;
#   encoder.residual_blocks: 3x3 residual blocks at stride 8 (receptive field and capacity);
#   encoder.feature_channels: the feature size the head (and a mapping buffer) sees;
#   head.width / head.residual_blocks: 1x1-conv MLP applied to each cell independently.
NETWORK_CONFIGS: dict[str, dict[str, Any]] = {
    # CPU default: ~18 ms forward at 240x320 on one core of this CPU, half of it in the two
    # residual blocks (bench/bench_localizer.py).
    "fast": {
        "name": "fast",
        "encoder": {"channels": [16, 32, 64, 128], "residual_blocks": 2, "feature_channels": 128},
        "head": {"width": 128, "residual_blocks": 1},
    },
    # ACE-like head width for mapping on buffered features, same compact encoder.
    "ace": {
        "name": "ace",
        "encoder": {"channels": [16, 32, 64, 128], "residual_blocks": 2, "feature_channels": 128},
        "head": {"width": 512, "residual_blocks": 1},
    },
    # The scene memory head (dsac_ros.memory_head): mapping cells as (feature, coordinate) pairs;
    # frames and cells are set when a map is made.
    "memory": {
        "name": "memory",
        "encoder": {"channels": [16, 32, 64, 128], "residual_blocks": 2, "feature_channels": 128},
        "head": {"type": "memory", "frames": 0, "cells": 0, "retrieve_frames": 8},
    },
    # DSAC*-like capacity (5.7M parameters; DSAC* has 6.9M), for GPU users training the whole network.
    "full": {
        "name": "full",
        "encoder": {"channels": [32, 64, 128, 256], "residual_blocks": 3, "feature_channels": 512},
        "head": {"width": 512, "residual_blocks": 2},
    },
}
DEFAULT_NETWORK = "fast"
# Network input height: 240 px. Measured (CPU time, one thread, 640x480 frame, "fast", 64
# hypotheses, half the predictions inliers): ~37 ms per frame at 240 px (network 18 + DSAC 17),
# ~99 ms at 480 px (DSAC*'s height; the network alone costs 76 ms there).
DEFAULT_INPUT_HEIGHT_PX = 240
# Scene-memory maps: a finer grid (8 px cells at 640 x 480) searched on every 2nd cell (key_stride 2).
MEMORY_INPUT_HEIGHT_PX = 480


def is_memory_head(head_config: dict[str, Any]) -> bool:
    """True for a scene-memory head config, False for the 1x1-conv MLP head."""
    return dict(head_config).get("type", "mlp") == "memory"


def is_compact_head(head_config: dict[str, Any]) -> bool:
    """True for the compact memory (map format 2: keyframe cells, product-quantised keys)."""
    return is_memory_head(head_config) and dict(head_config).get("layout") == "pq"


def build_head(feature_channels: int, head_config: dict[str, Any]) -> nn.Module:
    """The head a config describes: ``Head`` (MLP), ``CompactMemoryHead`` (memory, layout "pq":
    frames, entries, subquantizers) or the dense ``MemoryHead`` (memory: frames and cells >= 1)."""
    if is_compact_head(head_config):
        from dsac_ros.compact_memory import CompactMemoryHead

        return CompactMemoryHead(feature_channels, int(head_config["frames"]), int(head_config["entries"]),
                                 int(head_config["subquantizers"]), int(head_config["retrieve_frames"]),
                                 int(head_config.get("key_stride", 1)))
    if is_memory_head(head_config):
        from dsac_ros.memory_head import MemoryHead

        return MemoryHead(feature_channels, int(head_config["frames"]), int(head_config["cells"]),
                          int(head_config["retrieve_frames"]), int(head_config.get("key_stride", 1)))
    return Head(feature_channels, int(head_config["width"]), int(head_config["residual_blocks"]))


def network_config(name_or_config: str | dict[str, Any] = DEFAULT_NETWORK) -> dict[str, Any]:
    """A deep copy of a named config, or a validated copy of a config dict."""
    if isinstance(name_or_config, str):
        if name_or_config not in NETWORK_CONFIGS:
            raise ValueError(f"unknown network {name_or_config!r}; choose from {', '.join(NETWORK_CONFIGS)}")
        return copy.deepcopy(NETWORK_CONFIGS[name_or_config])
    config = copy.deepcopy(dict(name_or_config))
    try:
        channels = [int(c) for c in config["encoder"]["channels"]]
        int(config["encoder"]["residual_blocks"])
        int(config["encoder"]["feature_channels"])
        if is_memory_head(config["head"]):
            int(config["head"]["frames"])
            int(config["head"]["entries"] if is_compact_head(config["head"]) else config["head"]["cells"])
            int(config["head"]["retrieve_frames"])
        else:
            int(config["head"]["width"])
            int(config["head"]["residual_blocks"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"invalid network config {config!r}: {error!r}") from error
    if len(channels) != 4:
        raise ValueError(f"encoder.channels needs 4 widths (full res + 3 stride-2 convs), got {channels}")
    return config


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class Encoder(nn.Module):
    """Scene-agnostic features at stride 8.

    Input (B, 1, H, W) normalised grayscale, H and W multiples of 8 -> (B, C, H/8, W/8).
    """

    def __init__(self, channels: list[int], residual_blocks: int, feature_channels: int) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.feature_channels = int(feature_channels)
        # Stride-2 convs use kernel 4, padding 1: their outputs sit on the centre of the 2x2 input
        # block they replace, so after three of them a cell is centred on its 8x8 pixel block.
        self.stem = nn.Sequential(
            nn.Conv2d(1, c0, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 4, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[_ResidualBlock(c3, 3) for _ in range(int(residual_blocks))])
        self.project = nn.Conv2d(c3, self.feature_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 1:
            raise ValueError(f"encoder input must be (B, 1, H, W), got {tuple(image.shape)}")
        if image.shape[2] % OUTPUT_STRIDE or image.shape[3] % OUTPUT_STRIDE:
            raise ValueError(f"encoder input size must be a multiple of {OUTPUT_STRIDE}, got {tuple(image.shape[2:])}")
        return torch.relu(self.project(self.blocks(self.stem(image))))


class Head(nn.Module):
    """Per-scene regressor: 1x1 convs, (B, C, h, w) features -> (B, 3, h, w) metres from the scene centre.

    Each cell is mapped independently, so a head trains on any bag of buffered feature vectors
    (reshape (N, C) to (N, C, 1, 1)).
    """

    def __init__(self, in_channels: int, width: int, residual_blocks: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(in_channels, width, 1)
        self.blocks = nn.Sequential(*[_ResidualBlock(width, 1) for _ in range(int(residual_blocks))])
        self.out = nn.Conv2d(width, 3, 1)
        # Start near the scene centre: small initial offsets keep early reprojection losses sane.
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(torch.relu(self.inp(features))))


class SceneCoordinateNetwork(nn.Module):
    """Encoder + head + scene centre: (B, 1, H, W) normalised grayscale -> (B, 3, H/8, W/8) world metres."""

    def __init__(self, encoder: Encoder, head: Head, scene_center_m, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.config = copy.deepcopy(config) if config is not None else None
        center = torch.as_tensor(np.asarray(scene_center_m, dtype=np.float32).reshape(3))
        # Not persistent: the map file stores the centre once, in its own field.
        self.register_buffer("scene_center_m", center.view(1, 3, 1, 1), persistent=False)

    def coords_from_features(self, features: torch.Tensor, retrieve_frames: int | None = None) -> torch.Tensor:
        """(B, C, h, w) encoder features -> (B, 3, h, w) scene coordinates in metres.

        retrieve_frames: for a memory head, mapping frames searched in this call (None: the map's)."""
        if retrieve_frames is not None and getattr(self.head, "retrieve_frames", None) is not None:
            return self.head(features, retrieve_frames=retrieve_frames) + self.scene_center_m
        return self.head(features) + self.scene_center_m

    def forward(self, image: torch.Tensor, retrieve_frames: int | None = None) -> torch.Tensor:
        return self.coords_from_features(self.encoder(image), retrieve_frames)

    def set_scene_center(self, scene_center_m) -> None:
        center = torch.as_tensor(np.asarray(scene_center_m, dtype=np.float32).reshape(1, 3, 1, 1))
        self.scene_center_m.copy_(center.to(self.scene_center_m.device))


def build_network(config: str | dict[str, Any] = DEFAULT_NETWORK,
                  scene_center_m=(0.0, 0.0, 0.0)) -> SceneCoordinateNetwork:
    """Build an untrained network from a config name or dict."""
    config = network_config(config)
    enc = config["encoder"]
    encoder = Encoder([int(c) for c in enc["channels"]], int(enc["residual_blocks"]), int(enc["feature_channels"]))
    head = build_head(encoder.feature_channels, config["head"])
    return SceneCoordinateNetwork(encoder, head, scene_center_m, config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- image preparation and the cell <-> pixel mapping ------------------------------------------

def network_input_size(width_px: int, height_px: int, input_height_px: int) -> tuple[int, int]:
    """(width, height) of the network input for an image: the map's height, the width keeping the
    aspect ratio, both rounded to multiples of 8. The small aspect change from rounding is exact
    in the geometry because x and y are rescaled separately (``Intrinsics.resized``)."""
    if input_height_px <= 0 or input_height_px % OUTPUT_STRIDE:
        raise ValueError(f"input height must be a positive multiple of {OUTPUT_STRIDE}, got {input_height_px}")
    width = int(round(width_px * input_height_px / height_px / OUTPUT_STRIDE)) * OUTPUT_STRIDE
    return max(width, OUTPUT_STRIDE), int(input_height_px)


def cell_centers_px(cells_w: int, cells_h: int, input_size: tuple[int, int],
                    image_size: tuple[int, int]) -> np.ndarray:
    """Pixel centres of output cells, in the ORIGINAL image's pixels.

    cells_w, cells_h: output grid size; input_size / image_size: (width, height) of the network
    input and of the original image. Cell (x, y) is at input pixel (8x + 4, 8y + 4); with pixel
    centres at integer coordinates a resize by s maps u to (u + 0.5) * s - 0.5, inverted here.
    Returns (cells_h * cells_w, 2) float64 (x, y), row-major over cells (y outer, x inner),
    matching ``coords.reshape(3, -1).T`` of a (3, cells_h, cells_w) prediction.
    """
    in_w, in_h = input_size
    img_w, img_h = image_size
    u_in = OUTPUT_STRIDE * np.arange(cells_w, dtype=np.float64) + OUTPUT_STRIDE / 2
    v_in = OUTPUT_STRIDE * np.arange(cells_h, dtype=np.float64) + OUTPUT_STRIDE / 2
    u = (u_in + 0.5) * (img_w / in_w) - 0.5
    v = (v_in + 0.5) * (img_h / in_h) - 0.5
    grid_u, grid_v = np.meshgrid(u, v)
    return np.stack([grid_u.ravel(), grid_v.ravel()], axis=1)


@dataclass
class NetworkInput:
    """A prepared image. tensor: (1, 1, h, w) float32 on the CPU; sizes are (width, height)."""

    tensor: torch.Tensor
    input_size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def cells_size(self) -> tuple[int, int]:
        return self.input_size[0] // OUTPUT_STRIDE, self.input_size[1] // OUTPUT_STRIDE

    def cell_centers_px(self) -> np.ndarray:
        """(cells_h * cells_w, 2) cell centres in original-image pixels (see ``cell_centers_px``)."""
        return cell_centers_px(*self.cells_size, self.input_size, self.image_size)

    def input_intrinsics(self, intrinsics: Intrinsics) -> Intrinsics:
        """The original image's intrinsics rescaled to the network input (for losses in input pixels)."""
        return intrinsics.resized(*self.input_size)


def to_gray_resized(image_rgb: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB or (H, W) uint8 gray -> (h, w) uint8 grayscale at input_size (width, height)."""
    image = np.ascontiguousarray(image_rgb)
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if (gray.shape[1], gray.shape[0]) != tuple(input_size):
        shrinking = input_size[0] < gray.shape[1]
        gray = cv2.resize(gray, tuple(input_size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return gray


def normalize_gray(gray_u8, normalization: dict[str, Any] = DEFAULT_NORMALIZATION) -> torch.Tensor:
    """(..., h, w) uint8 grayscale (numpy or tensor) -> float32 tensor (x / 255 - mean) / std."""
    return normalize_unit_gray(torch.as_tensor(gray_u8).to(torch.float32) / 255.0, normalization)


def normalize_unit_gray(gray_01, normalization: dict[str, Any] = DEFAULT_NORMALIZATION) -> torch.Tensor:
    """(..., h, w) float32 grayscale in [0, 1] (numpy or tensor; e.g. an augmented view) -> the
    network's normalised input. The one place normalisation happens, for mapping and localisation.

    ``normalization["per_image"]`` (maps that ask for it): each image is standardised by its own
    mean and standard deviation instead of the fixed ones, which cancels a change of exposure
    (gain) exactly and of gamma largely, at mapping and at localisation alike.
    ``normalization["per_image_gain"]``: each image is scaled to the fixed mean first (one gain
    per image, contrast kept), then normalised with the fixed mean and std."""
    gray = torch.as_tensor(gray_01)
    if normalization.get("per_image_gain"):
        gray = gray * (float(normalization["mean"]) / gray.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-3))
    elif normalization.get("per_image"):
        mean = gray.mean(dim=(-2, -1), keepdim=True)
        std = gray.std(dim=(-2, -1), keepdim=True).clamp_min(1e-3)
        return (gray - mean) / std
    return (gray - float(normalization["mean"])) / float(normalization["std"])


def prepare_input(image_rgb: np.ndarray, input_height_px: int,
                  normalization: dict[str, Any] = DEFAULT_NORMALIZATION) -> NetworkInput:
    """(H, W, 3) uint8 RGB (or (H, W) gray) -> NetworkInput with a (1, 1, h, w) normalised tensor (CPU).

    Localisation goes through this; mapping's views (``dsac_ros.mapping.views``) use the same two
    steps, ``to_gray_resized`` and ``normalize_unit_gray``, so the network always sees the same
    resizing and normalisation.
    """
    height, width = image_rgb.shape[:2]
    input_size = network_input_size(width, height, input_height_px)
    tensor = normalize_gray(to_gray_resized(image_rgb, input_size), normalization)[None, None]
    return NetworkInput(tensor.contiguous(), input_size, (int(width), int(height)))


def backproject_depth_at(depth_m: np.ndarray, intrinsics: Intrinsics, pixels_xy: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame 3D points at given pixels from a depth image.

    depth_m: (H, W) metres, 0 or non-finite = invalid; pixels_xy: (N, 2) in depth-image pixels
    (the depth image is registered to the colour image, same size). Depth is read at the nearest
    pixel. Returns (N, 3) float64 points (zeros where invalid) and an (N,) bool validity mask.
    """
    height, width = depth_m.shape
    cols = np.clip(np.rint(pixels_xy[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.rint(pixels_xy[:, 1]).astype(np.int64), 0, height - 1)
    depth = depth_m[rows, cols].astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0.0)
    x = (pixels_xy[:, 0] - intrinsics.cx_px) / intrinsics.fx_px * depth
    y = (pixels_xy[:, 1] - intrinsics.cy_px) / intrinsics.fy_px * depth
    return np.stack([x, y, depth], axis=1), valid
