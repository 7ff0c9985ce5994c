"""Network inputs made from a frame, plain or augmented, with exact pixel bookkeeping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np
import torch

from dsac_ros.mapping.options import AugmentationOptions
from dsac_ros.network import DEFAULT_NORMALIZATION, OUTPUT_STRIDE, normalize_unit_gray


@dataclass
class AugmentedView:
    """One network input made from a frame.

    tensor: (1, 1, h, w) normalised grayscale (h, w multiples of 8); pixels_xy: (h/8 * w/8, 2)
    float64 cell centres in the ORIGINAL image's pixels (row-major over cells); inside: (cells,)
    bool, False for cells whose centre falls outside the original image (rotation corners).
    """

    tensor: torch.Tensor
    pixels_xy: np.ndarray
    inside: np.ndarray


def augmentation_affine(input_size: tuple[int, int], scale: float, rotation_deg: float
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """(2, 3) affine from network-input pixels to augmented-view pixels, and the view's (w, h).

    The view is the input rescaled by ``scale`` (size rounded to multiples of 8; x and y scale
    separately so the rounding stays exact) and turned by ``rotation_deg`` about its centre.
    Pixel centres sit at integer coordinates: a resize by s maps u to (u + 0.5) s - 0.5.
    """
    in_w, in_h = input_size
    out_w = max(OUTPUT_STRIDE, int(round(in_w * scale / OUTPUT_STRIDE)) * OUTPUT_STRIDE)
    out_h = max(OUTPUT_STRIDE, int(round(in_h * scale / OUTPUT_STRIDE)) * OUTPUT_STRIDE)
    sx, sy = out_w / in_w, out_h / in_h
    resize = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    angle = math.radians(rotation_deg)
    c, s = math.cos(angle), math.sin(angle)
    centre = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
    rotate = np.eye(3)
    rotate[:2, :2] = [[c, -s], [s, c]]
    rotate[:2, 2] = centre - rotate[:2, :2] @ centre
    return (rotate @ resize)[:2], (out_w, out_h)


def view_cell_pixels(view_size: tuple[int, int], affine: np.ndarray, input_size: tuple[int, int],
                     image_size: tuple[int, int]) -> np.ndarray:
    """(cells, 2) float64 original-image pixels of the cell centres (8x + 4, 8y + 4) of a view.

    Inverts the augmentation affine (view -> network input), then the input resize (input ->
    original image). Row-major over cells, like ``coords.reshape(3, -1).T``.
    """
    out_w, out_h = view_size
    u = OUTPUT_STRIDE * np.arange(out_w // OUTPUT_STRIDE, dtype=np.float64) + OUTPUT_STRIDE / 2
    v = OUTPUT_STRIDE * np.arange(out_h // OUTPUT_STRIDE, dtype=np.float64) + OUTPUT_STRIDE / 2
    grid_u, grid_v = np.meshgrid(u, v)
    view_px = np.stack([grid_u.ravel(), grid_v.ravel(), np.ones(grid_u.size)], axis=0)
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    input_px = (np.linalg.inv(full) @ view_px)[:2].T
    (in_w, in_h), (img_w, img_h) = input_size, image_size
    return np.stack([(input_px[:, 0] + 0.5) * (img_w / in_w) - 0.5,
                     (input_px[:, 1] + 0.5) * (img_h / in_h) - 0.5], axis=1)


def make_view(gray_input: np.ndarray, image_size: tuple[int, int], rng: Optional[np.random.Generator],
              augmentation: AugmentationOptions, normalization: dict[str, Any] = DEFAULT_NORMALIZATION
              ) -> AugmentedView:
    """A view of a frame already resized to the network input: plain (rng None) or augmented.

    gray_input: (h, w) uint8 or float32 in [0, 255] at the network input size; image_size:
    (width, height) of the original image the pose and intrinsics describe.
    """
    in_h, in_w = gray_input.shape
    image = gray_input.astype(np.float32) / 255.0
    if rng is None:
        affine, view_size = augmentation_affine((in_w, in_h), 1.0, 0.0)
    else:
        scale = float(rng.uniform(*augmentation.scale_range))
        rotation = float(rng.uniform(-augmentation.max_rotation_deg, augmentation.max_rotation_deg))
        affine, view_size = augmentation_affine((in_w, in_h), scale, rotation)
        # Mean grey outside the rotated image: zero after normalisation, the least informative fill.
        image = cv2.warpAffine(image, affine, view_size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=float(normalization["mean"]))
        contrast = float(rng.uniform(1.0 - augmentation.contrast, 1.0 + augmentation.contrast))
        brightness = float(rng.uniform(-augmentation.brightness, augmentation.brightness))
        image = np.clip((image - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
    pixels = view_cell_pixels(view_size, affine, (in_w, in_h), image_size)
    img_w, img_h = image_size
    inside = ((pixels[:, 0] >= -0.5) & (pixels[:, 0] <= img_w - 0.5)
              & (pixels[:, 1] >= -0.5) & (pixels[:, 1] <= img_h - 0.5))
    tensor = normalize_unit_gray(torch.from_numpy(np.ascontiguousarray(image)), normalization)
    return AugmentedView(tensor[None, None].contiguous(), pixels, inside)
