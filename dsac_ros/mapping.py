"""Mapping: frames with poses -> a trained scene coordinate network -> a map file.

Pipeline (``map_recording``), on a wall-clock budget:

    read frames --> hold out every k-th frame for validation
      --> buffer: frozen encoder features of each mapping frame in ``augment_passes`` views
          (pass 0 as the localizer sees it, then random scale / in-plane rotation /
          brightness-contrast); every cell keeps its exact pixel in the ORIGINAL image, so targets
          and reprojection use the frame's own intrinsics
      --> the head:
          * ``memory`` (default): the plain views' cells stored as (feature, coordinate) pairs
            (``dsac_ros.memory_head``); ``rgbd`` takes coordinates from depth + pose, ``rgb``
            triangulates them from matches between mapping frames. Seconds, no training.
          * ``fast`` / ``ace``: an MLP head trained on random buffer rows (``rgbd``: distance to
            the ground-truth coordinate; ``rgb``: ACE's reprojection loss with an annealed clamp
            and DSAC*'s depth constraints)
      --> optional end-to-end stage: the DSAC expected pose loss (``dsac.expected_pose_loss``) on
          whole buffered views, gradients into the head (a memory head's stored coordinates;
          each view looks up the memory with its own frame left out)
      --> map file with training metadata.

``full`` mode trains the whole network (encoder and head) on whole augmented images, DSAC*
style (stage 1: coordinate or reprojection loss; stage 2: expected pose loss), for GPU users.

Budget split: reading + buffering take what they take (measured and reported); augmentation
passes beyond the second are added only while the buffer is predicted to finish within
``buffer_fraction`` (30 %) of the budget. Of the rest, a small reserve (3 %, at least 2 s) goes to
final validation and saving, then ``head_fraction`` (default 80 %) to the first stage and the
remainder to the end-to-end stage (all of it to the first stage without it). A memory head
needs only the end-to-end share; the rest of the budget is not spent.

Long runs are resumable: a checkpoint directory next to the output (``MAP.pt.ckpt/``) holds the
buffer and the training state (weights, optimiser, step, time spent), written periodically.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import cv2
import numpy as np
import torch
from torch import nn

from dsac_ros.buffer import PixelBuffer, cell_targets
from dsac_ros.camera import Intrinsics
from dsac_ros.device import describe_device, resolve_device
from dsac_ros.encoder_file import DEFAULT_ENCODER_PATH, calibrate_random_encoder, load_mapping_encoder
from dsac_ros.dsac import RansacOptions, estimate_pose, expected_pose_loss
from dsac_ros.frame import Frame
from dsac_ros.geometry import pose_errors
from dsac_ros.head_training import (HeadTrainingOptions, coords_loss, head_forward_flat, one_cycle_lr,
                                    reprojection_loss)
from dsac_ros.network import (DEFAULT_INPUT_HEIGHT_PX, DEFAULT_NORMALIZATION, OUTPUT_STRIDE, Encoder, Head,
                              build_head, is_memory_head,
                              SceneCoordinateNetwork, network_config, network_input_size, to_gray_resized)

logger = logging.getLogger(__name__)

MODES = ("rgbd", "rgb", "full")
CHECKPOINT_VERSION = 1


class MappingError(ValueError):
    """Mapping cannot run on this data or with these options; the message says why."""


@dataclass
class MappingOptions:
    """Everything that shapes a mapping run. Times in seconds unless named otherwise."""

    mode: str = "rgbd"
    minutes: float = 10.0
    end_to_end: bool = True
    device: str = "auto"
    # Encoder file (dsac_ros.encoder_file.load_encoder); None = the shipped one, else a random
    # encoder with a warning. ``full`` mode uses it only when given explicitly.
    encoder_path: Optional[str] = None
    # Head architecture (and, in full mode, the whole network) from dsac_ros.network.NETWORK_CONFIGS;
    # None: "memory" (scene memory head, dsac_ros.memory_head) for rgbd / rgb, "full" in full mode.
    # "fast" / "ace" train an MLP head instead (10 minutes reach about 40 cm on small_room).
    network: Optional[str] = None
    input_height_px: int = DEFAULT_INPUT_HEIGHT_PX
    frame_stride: int = 1
    # Memory head: mapping frames retrieved per image, whose cells are searched for each cell.
    retrieve_frames: int = 8
    # Validation: every ``validation_every``-th frame is held back (at most max_validation_frames).
    validation_every: int = 20
    max_validation_frames: int = 20
    # Buffer augmentation: pass 0 is the plain view, passes 1.. random views (DSAC*'s ranges for
    # scale and photometry; a smaller rotation, as hand-held sequences roll little).
    # None: as many whole passes as fit in ``buffer_fraction`` of the budget (measured on pass 0),
    # between 2 and ``max_augment_passes``.
    augment_passes: Optional[int] = None
    buffer_fraction: float = 0.3
    max_augment_passes: int = 6
    scale_range: tuple[float, float] = (2.0 / 3.0, 1.5)
    max_rotation_deg: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.1
    # Stage split and schedules.
    head_fraction: float = 0.8
    reserve_fraction: float = 0.03
    batch_size: int = 4096
    lr_min: float = 5e-4
    lr_max: float = 5e-3
    clamp_start_px: float = 50.0
    clamp_end_px: float = 1.0
    e2e_lr: float = 1e-4
    e2e_hypotheses: int = 64
    # An end-to-end step costs about 1.6 s on this CPU with 1200 cells and up to 100 refinement
    # iterations per hypothesis, 0.5 s with 600 cells and 10 iterations (DSAC 2017 refined 8 times).
    e2e_max_cells: int = 600  # cells of a view per end-to-end step (random subset if more)
    e2e_refinement_iterations: int = 10
    # full mode (DSAC* stage 1 / 2 learning rates).
    full_lr: float = 1e-4
    full_e2e_lr: float = 1e-6
    # Bookkeeping.
    validate_every_s: Optional[float] = None  # None: about six per run (each localises up to 5 held-out frames)
    checkpoint_every_s: float = 120.0
    seed: int = 0
    threads: Optional[int] = None
    progress: bool = True
    max_steps: Optional[int] = None  # stop each training stage after this many steps (tests)
    max_e2e_steps: Optional[int] = None  # the same for end-to-end stages (None: max_steps)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MappingError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if not self.minutes > 0:
            raise MappingError(f"minutes must be positive, got {self.minutes}")
        if self.augment_passes is not None and self.augment_passes < 1:
            raise MappingError("augment_passes must be at least 1 (the plain view)")
        if not 0.0 < self.head_fraction <= 1.0:
            raise MappingError(f"head_fraction must be in (0, 1], got {self.head_fraction}")
        if self.input_height_px <= 0 or self.input_height_px % OUTPUT_STRIDE:
            raise MappingError(f"input height must be a positive multiple of {OUTPUT_STRIDE}")
        if self.frame_stride < 1 or self.validation_every < 2:
            raise MappingError("frame_stride must be >= 1 and validation_every >= 2")
        if self.network is None:
            self.network = "full" if self.mode == "full" else "memory"
        # Unknown names fail here, before any data is read.
        if self.mode == "full" and is_memory_head(network_config(self.network)["head"]):
            raise MappingError("full mode trains a network end to end; a memory head has nothing to train "
                               "there: use --mode rgbd or rgb with --network memory")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


# --------------------------------------------------------------------------------------------
# timing


class StageTimer:
    """Accumulates wall time per named part of the pipeline (the "where does time go" record)."""

    def __init__(self, initial: Optional[dict[str, float]] = None) -> None:
        self.seconds: dict[str, float] = dict(initial or {})

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def measure(self, name: str):
        timer = self

        class _Context:
            def __enter__(self_inner):
                self_inner.start = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.add(name, time.perf_counter() - self_inner.start)
                return False

        return _Context()


# --------------------------------------------------------------------------------------------
# augmentation with exact pixel bookkeeping


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
              options: MappingOptions, normalization: dict[str, Any] = DEFAULT_NORMALIZATION) -> AugmentedView:
    """A view of a frame already resized to the network input: plain (rng None) or augmented.

    gray_input: (h, w) uint8 or float32 in [0, 255] at the network input size; image_size:
    (width, height) of the original image the pose and intrinsics describe.
    """
    in_h, in_w = gray_input.shape
    image = gray_input.astype(np.float32) / 255.0
    if rng is None:
        affine, view_size = augmentation_affine((in_w, in_h), 1.0, 0.0)
    else:
        scale = float(rng.uniform(*options.scale_range))
        rotation = float(rng.uniform(-options.max_rotation_deg, options.max_rotation_deg))
        affine, view_size = augmentation_affine((in_w, in_h), scale, rotation)
        # Mean grey outside the rotated image: zero after normalisation, the least informative fill.
        image = cv2.warpAffine(image, affine, view_size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=float(normalization["mean"]))
        contrast = float(rng.uniform(1.0 - options.contrast, 1.0 + options.contrast))
        brightness = float(rng.uniform(-options.brightness, options.brightness))
        image = np.clip((image - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
    pixels = view_cell_pixels(view_size, affine, (in_w, in_h), image_size)
    img_w, img_h = image_size
    inside = ((pixels[:, 0] >= -0.5) & (pixels[:, 0] <= img_w - 0.5)
              & (pixels[:, 1] >= -0.5) & (pixels[:, 1] <= img_h - 0.5))
    mean, std = float(normalization["mean"]), float(normalization["std"])
    tensor = (torch.from_numpy(np.ascontiguousarray(image)) - mean) / std
    return AugmentedView(tensor[None, None].contiguous(), pixels, inside)


# --------------------------------------------------------------------------------------------
# frames in, buffer out


@dataclass
class FrameRecordSet:
    """Frames kept in memory at network-input resolution (mapping or validation).

    gray: list of (h, w) uint8 at the input size; image_sizes: (width, height) of the originals;
    depth_m: list of (H, W) float16 metres or None; world_T_cam: (F, 4, 4) float64.
    """

    gray: list = field(default_factory=list)
    image_sizes: list = field(default_factory=list)
    intrinsics: list = field(default_factory=list)
    depth_m: list = field(default_factory=list)
    world_T_cam: list = field(default_factory=list)
    indices: list = field(default_factory=list)  # position in the recording

    def __len__(self) -> int:
        return len(self.gray)

    def append(self, frame: Frame, gray: np.ndarray, index: int, keep_depth: bool) -> None:
        self.gray.append(gray)
        self.image_sizes.append((frame.intrinsics.width_px, frame.intrinsics.height_px))
        self.intrinsics.append(frame.intrinsics)
        depth = None
        if keep_depth and frame.depth_m is not None:
            depth = np.asarray(frame.depth_m, dtype=np.float16)
        self.depth_m.append(depth)
        self.world_T_cam.append(np.asarray(frame.world_T_cam, dtype=np.float64))
        self.indices.append(index)


@dataclass
class MappingBuffer:
    """The pixel buffer plus the bookkeeping the stages need.

    buffer: rows of all views (``PixelBuffer``; its frame_index counts views);
    view_frame: (V,) index of the mapping frame each view came from; view_pass: (V,) augmentation
    pass (0 = plain); view_rows: (V, 2) [start, stop) row range of each view (views are contiguous);
    mapping_frames: number of mapping frames; validation: plain features of held-out frames.
    """

    buffer: PixelBuffer
    view_frame: np.ndarray
    view_pass: np.ndarray
    view_rows: np.ndarray
    mapping_frames: int
    validation: list  # [(features (n, C) fp16, pixels_xy (n, 2), Intrinsics, world_T_cam (4, 4))]
    scene_center_m: np.ndarray
    has_depth: bool

    def plain_views(self) -> list[tuple[int, int, int, int]]:
        """(view, frame, start row, stop row) of every pass-0 view: the frames as the localizer sees them."""
        return [(view, int(frame), int(start), int(stop))
                for view, (frame, p, (start, stop)) in enumerate(zip(self.view_frame, self.view_pass, self.view_rows))
                if p == 0]


def _frame_problem(frame: Frame) -> str:
    if frame.world_T_cam is None:
        return "no pose"
    pose = np.asarray(frame.world_T_cam)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        return "invalid pose"
    image = np.asarray(frame.image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}"
    if (frame.intrinsics.width_px, frame.intrinsics.height_px) != (image.shape[1], image.shape[0]):
        return "intrinsics do not match the image size"
    return ""


def split_frames(frames: Iterable[Frame], options: MappingOptions, timer: StageTimer,
                 keep_depth: bool = True, on_frame: Optional[Callable[[int], None]] = None
                 ) -> tuple[FrameRecordSet, FrameRecordSet, dict]:
    """Read frames into (mapping, validation) sets at the network input size.

    Every ``frame_stride``-th frame is used; of those, every ``validation_every``-th (offset to the
    middle of each block, at most ``max_validation_frames``) is held back for validation. Frames
    without a valid pose are skipped and counted.
    """
    mapping, validation = FrameRecordSet(), FrameRecordSet()
    skipped: dict[str, int] = {}
    used = 0
    iterator = iter(frames)
    index = -1
    while True:
        start = time.perf_counter()
        try:
            frame = next(iterator)
        except StopIteration:
            timer.add("read", time.perf_counter() - start)
            break
        index += 1
        timer.add("read", time.perf_counter() - start)
        if on_frame is not None:
            on_frame(index)
        if index % options.frame_stride:
            continue
        problem = _frame_problem(frame)
        if problem:
            skipped[problem] = skipped.get(problem, 0) + 1
            continue
        with timer.measure("prepare"):
            input_size = network_input_size(frame.intrinsics.width_px, frame.intrinsics.height_px,
                                            options.input_height_px)
            gray = to_gray_resized(frame.image_rgb, input_size)
        hold_out = (used % options.validation_every == options.validation_every // 2
                    and len(validation) < options.max_validation_frames)
        (validation if hold_out else mapping).append(frame, gray, index, keep_depth)
        used += 1
    if len(mapping) == 0:
        detail = f" (skipped: {skipped})" if skipped else ""
        raise MappingError(f"no usable mapping frames: frames need an image, intrinsics and a pose{detail}")
    return mapping, validation, {"frames_read": index + 1, "skipped": skipped}


def scene_center(mapping: FrameRecordSet, use_depth: bool) -> np.ndarray:
    """(3,) metres: mean of depth-derived coordinates (DSAC*) or, without depth, of camera centres."""
    if use_depth:
        points = []
        for i in range(0, len(mapping), max(1, len(mapping) // 50)):
            depth = mapping.depth_m[i]
            if depth is None:
                continue
            w, h = mapping.image_sizes[i]
            ys, xs = np.mgrid[0:h:8, 0:w:8]
            pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
            coords = cell_targets(depth.astype(np.float32), mapping.world_T_cam[i], mapping.intrinsics[i], pixels)
            points.append(coords[np.isfinite(coords).all(axis=1)])
        if points and sum(len(p) for p in points) > 0:
            return np.concatenate(points).mean(axis=0).astype(np.float64)
    return np.mean(np.stack(mapping.world_T_cam)[:, :3, 3], axis=0)


@torch.no_grad()
def build_buffer(mapping: FrameRecordSet, validation: FrameRecordSet, encoder: Encoder, options: MappingOptions,
                 device: torch.device, timer: StageTimer, use_depth: bool,
                 on_view: Optional[Callable[[int, int], None]] = None,
                 buffer_seconds: Optional[float] = None) -> MappingBuffer:
    """Encoder features of every mapping frame in ``augment_passes`` views, plus plain validation features.

    Pass 0 is the frame as the localizer sees it; later passes are random augmentations
    (seeded by options.seed). With ``options.augment_passes`` None, passes continue while the
    next whole pass is predicted (from the time per view so far) to end within
    ``buffer_seconds`` of buffering. Rows whose cell centre falls outside the original image are
    dropped; in ``rgbd`` mode rows keep NaN targets where depth is missing (the coords loss skips them).
    """
    # Channels-last convolutions: about 35 % faster on this CPU (measured, 1 thread, 320 x 240).
    encoder = encoder.to(device).eval().to(memory_format=torch.channels_last)
    rng = np.random.default_rng([options.seed, 0xB0F])
    parts: list[PixelBuffer] = []
    view_frame, view_pass, view_rows = [], [], []
    rows = 0
    passes = options.augment_passes or options.max_augment_passes
    total_views = len(mapping) * passes
    start = time.perf_counter()
    for pass_index in range(passes):
        if pass_index >= 2 and options.augment_passes is None and buffer_seconds is not None:
            per_pass = (time.perf_counter() - start) / pass_index
            if (pass_index + 1) * per_pass > buffer_seconds:
                break
        for frame_index in range(len(mapping)):
            with timer.measure("augment"):
                view = make_view(mapping.gray[frame_index], mapping.image_sizes[frame_index],
                                 None if pass_index == 0 else rng, options)
            with timer.measure("encoder"):
                features = encoder(view.tensor.to(device).contiguous(memory_format=torch.channels_last))
                flat = features[0].reshape(features.shape[1], -1).T[torch.from_numpy(view.inside).to(device)]
                flat = flat.to(torch.float16).cpu()
            with timer.measure("targets"):
                pixels = view.pixels_xy[view.inside]
                depth = mapping.depth_m[frame_index]
                coords = cell_targets(None if (depth is None or not use_depth) else depth.astype(np.float32),
                                      mapping.world_T_cam[frame_index], mapping.intrinsics[frame_index], pixels)
                pose = mapping.world_T_cam[frame_index]
                parts.append(PixelBuffer(
                    features=flat, coords_world_m=torch.from_numpy(coords),
                    pixels_xy=torch.from_numpy(pixels.astype(np.float32)),
                    frame_index=torch.zeros(len(pixels), dtype=torch.int32),
                    cam_T_world=torch.from_numpy(np.linalg.inv(pose).astype(np.float32))[None],
                    intrinsics_K=torch.from_numpy(mapping.intrinsics[frame_index].K.astype(np.float32))[None]))
            view_frame.append(frame_index)
            view_pass.append(pass_index)
            view_rows.append((rows, rows + len(pixels)))
            rows += len(pixels)
            if on_view is not None:
                on_view(len(view_frame), total_views)
    with timer.measure("targets"):
        buffer = PixelBuffer.concatenate(parts)
    encoder.to(memory_format=torch.contiguous_format)
    held_out = []
    for i in range(len(validation)):
        with timer.measure("validation"):
            view = make_view(validation.gray[i], validation.image_sizes[i], None, options)
            features = encoder(view.tensor.to(device))
            flat = features[0].reshape(features.shape[1], -1).T.to(torch.float16).cpu()
            held_out.append((flat, view.pixels_xy, validation.intrinsics[i], validation.world_T_cam[i]))
    return MappingBuffer(buffer, np.asarray(view_frame), np.asarray(view_pass), np.asarray(view_rows, dtype=np.int64),
                         len(mapping), held_out, scene_center(mapping, use_depth), use_depth)


class EpochSampler:
    """Shuffled passes over ``count`` items: every item once per epoch, in a fresh random order.

    Used for buffer rows (head training) and for whole views (end-to-end stage), so every mapping
    frame is visited, unlike independent random draws. State is (epoch, position) for resuming.
    """

    def __init__(self, count: int, seed: int, epoch: int = 0, position: int = 0) -> None:
        if count < 1:
            raise MappingError("nothing to sample from (empty buffer)")
        self.count, self.seed, self.epoch, self.position = int(count), int(seed), int(epoch), int(position)
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.count, generator=generator)

    def next(self, size: int) -> torch.Tensor:
        """(size,) int64 indices; wraps into the next epoch (size may exceed count)."""
        pieces, need = [], int(size)
        while need > 0:
            take = min(need, self.count - self.position)
            pieces.append(self._order[self.position:self.position + take])
            self.position += take
            need -= take
            if self.position >= self.count:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
        return torch.cat(pieces)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


# --------------------------------------------------------------------------------------------
# validation


def validate_head(head: Head, data: MappingBuffer, device: torch.device, max_frames: int = 10,
                  hypotheses: int = 64) -> dict[str, Any]:
    """Median pose error of held-out mapping frames (plain features, argmax DSAC, fixed seeds)."""
    if not data.validation:
        return {}
    frames = data.validation[:: max(1, len(data.validation) // max_frames)][:max_frames]
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32, device=device).view(1, 3)
    errors = []
    was_training = head.training
    head.eval()
    with torch.no_grad():
        for index, (features, pixels, intrinsics, pose) in enumerate(frames):
            coords = head_forward_flat(head, features.to(device=device, dtype=torch.float32)) + center
            errors.append(_pose_error(pixels, coords, intrinsics, pose, hypotheses, index))
    head.train(was_training)
    return summarize_errors(errors)


def _pose_error(pixels: np.ndarray, coords: torch.Tensor, intrinsics: Intrinsics, pose: np.ndarray,
                hypotheses: int, seed: int) -> tuple[float, float]:
    estimate, _ = estimate_pose(torch.as_tensor(pixels, device=coords.device), coords, intrinsics,
                                RansacOptions(hypotheses=hypotheses, seed=seed))
    if not estimate.success:
        return math.inf, math.inf
    t_m, r_deg = pose_errors(estimate.world_T_cam, pose)
    return float(t_m), float(r_deg)


def summarize_errors(errors: list[tuple[float, float]]) -> dict[str, Any]:
    """Median errors (None when the median frame failed) and percent within 5 cm / 5 deg."""
    if not errors:
        return {}
    array = np.asarray(errors, dtype=np.float64)
    t_sorted, r_sorted = np.sort(array[:, 0]), np.sort(array[:, 1])
    median_t, median_r = t_sorted[(len(array) - 1) // 2], r_sorted[(len(array) - 1) // 2]
    within = (array[:, 0] < 0.05) & (array[:, 1] < 5.0)
    return {"frames": len(array), "pct_5cm_5deg": 100.0 * float(within.mean()),
            "median_translation_cm": float(median_t * 100) if np.isfinite(median_t) else None,
            "median_rotation_deg": float(median_r) if np.isfinite(median_r) else None}


def _format_validation(result: dict[str, Any]) -> str:
    if not result:
        return "-"
    t, r = result.get("median_translation_cm"), result.get("median_rotation_deg")
    if t is None:
        return f"val fail ({result['pct_5cm_5deg']:.0f}%)"
    return f"val {t:.1f}cm/{r:.1f}deg {result['pct_5cm_5deg']:.0f}%"


# --------------------------------------------------------------------------------------------
# training stages (resumable: each stage keeps its state in a plain dict)


@dataclass
class Budget:
    """Seconds per stage, fixed once the buffer is built (stored in checkpoints)."""

    total_s: float
    head_s: float
    e2e_s: float
    reserve_s: float


def uses_memory_head(options: MappingOptions) -> bool:
    return is_memory_head(network_config(options.network)["head"])  # never in full mode (refused)


def split_budget(total_s: float, spent_s: float, options: MappingOptions) -> Budget:
    """What is left after reading + buffering, split between the stages (see module docstring).

    A memory head needs no training time: it is built from the buffer in seconds, and the
    end-to-end stage (if on) gets its usual share; the rest of the budget is not spent."""
    reserve = max(2.0, options.reserve_fraction * total_s)
    remaining = max(0.0, total_s - spent_s - reserve)
    if uses_memory_head(options):
        return Budget(total_s, 0.0, remaining * (1.0 - options.head_fraction) if options.end_to_end else 0.0, reserve)
    head = remaining * (options.head_fraction if options.end_to_end else 1.0)
    return Budget(total_s, head, remaining - head, reserve)


class Progress:
    """One tqdm bar over the whole wall-clock budget (seconds), with stage, loss and validation."""

    def __init__(self, total_s: float, enabled: bool, start_s: float = 0.0) -> None:
        from dsac_ros.progress import progress_bar

        self.bar = progress_bar(total=round(total_s), unit="s", disable=not enabled, dynamic_ncols=True, file=sys.stderr,
                        bar_format=("{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                                    "[{elapsed}<{remaining}]{postfix}"))
        self.origin = time.monotonic() - start_s
        self.stage, self.loss, self.validation = "", None, "-"

    def elapsed(self) -> float:
        return time.monotonic() - self.origin

    def update(self, stage: Optional[str] = None, loss: Optional[float] = None,
               validation: Optional[str] = None) -> None:
        if stage is not None:
            self.stage = stage
            self.bar.set_description_str(stage)
        if loss is not None:
            self.loss = loss
        if validation is not None:
            self.validation = validation
        loss_text = "-" if self.loss is None else f"{self.loss:.4g}"
        self.bar.set_postfix_str(f"loss {loss_text}, {self.validation}", refresh=False)
        self.bar.n = min(self.elapsed(), self.bar.total)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


@dataclass
class StageContext:
    """What a training stage needs besides its model: budget, progress, hooks for checkpoints."""

    seconds: float
    progress: Progress
    timer: StageTimer
    validate: Callable[[], dict[str, Any]]
    validate_every_s: float
    checkpoint: Callable[[dict[str, Any]], None]
    checkpoint_every_s: float
    max_steps: Optional[int] = None


def _stage_state(state: Optional[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A stage's resumable state: the saved one, or a fresh one (plus stage-specific counters)."""
    return dict(state or {"step": 0, "elapsed_s": 0.0, "sampler": {"epoch": 0, "position": 0}, "losses": [],
                          **extra})


class _StageRun:
    """What every resumable training stage keeps track of: time spent (saved + this run), when to
    stop, progress through the budget, and periodic validation and checkpoints of its state.

    weights() returns the model entries of a snapshot, e.g. {"head": head.state_dict()}.
    """

    def __init__(self, context: StageContext, state: dict[str, Any], optimizer: torch.optim.Optimizer,
                 sampler: "EpochSampler", weights: Callable[[], dict[str, Any]]) -> None:
        self.context, self.state, self.optimizer, self.sampler, self.weights = context, state, optimizer, sampler, weights
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        self._start, self._before = time.monotonic(), state["elapsed_s"]
        self._last = {"validation": state["elapsed_s"], "checkpoint": state["elapsed_s"]}

    def elapsed(self) -> float:
        return self._before + time.monotonic() - self._start

    def finished(self) -> bool:
        max_steps = self.context.max_steps
        return self.elapsed() >= self.context.seconds or (max_steps is not None and self.state["step"] >= max_steps)

    def progress(self) -> float:
        """Fraction of the budget used (time, or steps when a step cap is set and further along)."""
        progress = min(1.0, self.elapsed() / max(self.context.seconds, 1e-9))
        if self.context.max_steps:
            progress = max(progress, self.state["step"] / self.context.max_steps)
        return progress

    def snapshot(self) -> dict[str, Any]:
        self.state.update(copy.deepcopy(self.weights()), optimizer=self.optimizer.state_dict(),
                          sampler=self.sampler.state(), elapsed_s=self.elapsed())
        return self.state

    def periodic(self) -> None:
        """Validation and checkpointing (after a snapshot) when their intervals have passed."""
        context, elapsed = self.context, self.elapsed()
        if elapsed - self._last["validation"] >= context.validate_every_s:
            with context.timer.measure("validation"):
                result = context.validate()
            self._last["validation"] = elapsed
            self.state.setdefault("validations", []).append({"stage_seconds": round(elapsed, 1), **result})
            context.progress.update(validation=_format_validation(result))
        if elapsed - self._last["checkpoint"] >= context.checkpoint_every_s:
            with context.timer.measure("checkpoint"):
                context.checkpoint(self.snapshot())
            self._last["checkpoint"] = elapsed


def train_head_stage(head: Head, data: MappingBuffer, loss_kind: str, options: MappingOptions,
                     device: torch.device, context: StageContext, state: Optional[dict[str, Any]] = None
                     ) -> dict[str, Any]:
    """Head on random buffer rows (epoch sampler), one-cycle lr and annealed clamp over the stage's time.

    The losses and schedule of ``dsac_ros.head_training``, in a loop that can stop and
    resume exactly (optimiser state, sampler position, time spent). Returns the stage state.
    """
    buffer = data.buffer
    if loss_kind == "coords":
        usable = torch.nonzero(buffer.has_depth()).squeeze(1)
        if len(usable) == 0:
            raise MappingError("rgbd mode needs depth, but no buffered cell has a valid depth; use --mode rgb")
    else:
        usable = torch.arange(len(buffer))
    schedule = HeadTrainingOptions(loss=loss_kind, lr_min=options.lr_min, lr_max=options.lr_max,
                                   clamp_start_px=options.clamp_start_px, clamp_end_px=options.clamp_end_px)
    head.to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr_min, weight_decay=0.0)
    state = _stage_state(state)
    sampler = EpochSampler(len(usable), options.seed + 1, **state["sampler"])
    run = _StageRun(context, state, optimizer, sampler, lambda: {"head": head.state_dict()})
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32, device=device).view(1, 3)
    on_device = buffer.to(device) if device.type != "cpu" else buffer
    batch = min(options.batch_size, len(usable))
    context.progress.update(stage=f"head ({loss_kind})")
    running = None
    while not run.finished():
        progress = run.progress()
        for group in optimizer.param_groups:
            group["lr"] = one_cycle_lr(progress, schedule)
        step_start = time.perf_counter()
        pick = usable[sampler.next(batch)].to(on_device.features.device)
        features = on_device.features[pick].to(dtype=torch.float32)
        pred = head_forward_flat(head, features) + center
        if loss_kind == "coords":
            loss = coords_loss(pred, on_device.coords_world_m[pick])
        else:
            views = on_device.frame_index[pick].long()
            clamp = schedule.clamp_start_px * (schedule.clamp_end_px / schedule.clamp_start_px) ** progress
            loss = reprojection_loss(pred, on_device.pixels_xy[pick], on_device.cam_T_world[views],
                                     on_device.intrinsics_K[views], clamp, schedule)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        context.timer.add("head_steps", time.perf_counter() - step_start)
        state["step"] += 1
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if state["step"] % 20 == 1:
            state["losses"].append((state["step"], round(value, 6)))
            context.progress.update(loss=running)
        if state["step"] % 20 == 0:
            run.periodic()
    run.snapshot()
    state["samples_seen"] = state["step"] * batch
    head.eval()
    return state


# A memory map holds every mapping cell; above this size, ``fill_memory`` suggests thinning frames.
LARGE_MEMORY_MAP_BYTES = 500 * 2**20


def fill_memory(head: nn.Module, data: MappingBuffer, use_depth: bool,
                log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Store every mapping frame's plain view in a memory head; returns a stage state.

    rgbd: each cell's coordinate from depth and pose. rgb: coordinates triangulated from matches
    between mapping frames with known poses (``dsac_ros.memory_head.triangulate_memory``).
    """
    from dsac_ros.memory_head import triangulate_memory

    start = time.perf_counter()
    size_bytes = sum(t.numel() * t.element_size() for t in head.state_dict().values())
    if size_bytes > LARGE_MEMORY_MAP_BYTES:
        logger.warning("the memory map will be %.0f MB (%d mapping frames); map with --every K to keep every "
                       "K-th frame (small_room: every 2nd frame cost 3 points of cell inliers)",
                       size_bytes / 2**20, head.frames)
    buffer = data.buffer
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32).view(1, 3)
    plain = data.plain_views()
    for _, frame, start_row, stop_row in plain:
        offsets = buffer.coords_world_m[start_row:stop_row] - center if use_depth else \
            torch.full((stop_row - start_row, 3), float("nan"))
        head.store(frame, buffer.features[start_row:stop_row], offsets)
    triangulated = {}
    if use_depth:
        head.finish()
    else:
        views = [view for view, _, _, _ in plain]
        triangulated = triangulate_memory(head, [buffer.pixels_xy[a:b] for _, _, a, b in plain],
                                          buffer.cam_T_world[views].double(), buffer.intrinsics_K[views].double(),
                                          center.view(3).double())
    known = int(head.valid.sum())
    log(f"memory: {len(plain)} frames, {known} of {sum(b - a for _, _, a, b in plain)} cells with a "
        f"coordinate{' (triangulated)' if triangulated else ''}, {time.perf_counter() - start:.1f} s")
    if known == 0:
        raise MappingError("no mapping cell has a scene coordinate (no depth, nothing triangulated)")
    return {"step": 0, "elapsed_s": time.perf_counter() - start, "losses": [], "memory_cells": known,
            "triangulation": triangulated, "head": head.state_dict()}


def end_to_end_stage(head: Head, data: MappingBuffer, options: MappingOptions, device: torch.device,
                     context: StageContext, state: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train the head through the DSAC expected pose loss on whole buffered views.

    Each step takes one view (an epoch sampler over all views, so every mapping frame and its
    augmentations come round), predicts its cells' coordinates, and minimises
    ``expected_pose_loss`` (64 hypotheses, DSAC* loss: deg + 100 m) with Adam at ``e2e_lr``.
    Views where no hypothesis is valid are skipped (counted).
    """
    head.to(device).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=options.e2e_lr)
    state = _stage_state(state, skipped=0)
    sampler = EpochSampler(len(data.view_rows), options.seed + 2, **state["sampler"])
    run = _StageRun(context, state, optimizer, sampler, lambda: {"head": head.state_dict()})
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32, device=device).view(1, 3)
    ransac = RansacOptions(hypotheses=options.e2e_hypotheses,
                           max_refinement_iterations=options.e2e_refinement_iterations)
    rng = torch.Generator().manual_seed(options.seed + 3 + state["step"])
    context.progress.update(stage="end-to-end")
    running = None
    while not run.finished():
        step_start = time.perf_counter()
        view = int(sampler.next(1)[0])
        value = end_to_end_step(head, data, view, center, optimizer, ransac, options, device, rng)
        context.timer.add("e2e_steps", time.perf_counter() - step_start)
        state["step"] += 1
        if value is None:
            state["skipped"] += 1
        else:
            running = value if running is None else 0.95 * running + 0.05 * value
            state["losses"].append((state["step"], round(value, 4)))
            context.progress.update(loss=running)
        if state["step"] % 5 == 0:
            run.periodic()
    run.snapshot()
    head.eval()
    return state


def view_rows(data: MappingBuffer, view: int, max_cells: int, generator: Optional[torch.Generator] = None
              ) -> torch.Tensor:
    """Row indices of one view, a random subset of at most ``max_cells``."""
    start, stop = (int(v) for v in data.view_rows[view])
    rows = torch.arange(start, stop)
    if len(rows) > max_cells:
        rows = rows[torch.randperm(len(rows), generator=generator)[:max_cells]]
    return rows


def view_expected_loss(head: Head, data: MappingBuffer, view: int, center: torch.Tensor, ransac: RansacOptions,
                       options: MappingOptions, device: torch.device, generator: Optional[torch.Generator] = None,
                       ransac_generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Expected DSAC pose loss of one buffered view under the current head (with graph)."""
    rows = view_rows(data, view, options.e2e_max_cells, generator)
    buffer = data.buffer
    features = buffer.features[rows].to(device=device, dtype=torch.float32)
    # A memory head must not find the view's own frame: train as a test image would be seen.
    coords = head_forward_flat(head, features, exclude_frame=int(data.view_frame[view])) + center
    K = buffer.intrinsics_K[view].double().numpy()
    world_T_cam = np.linalg.inv(buffer.cam_T_world[view].double().numpy())
    return expected_pose_loss(buffer.pixels_xy[rows].to(device), coords, K, world_T_cam, ransac,
                              generator=ransac_generator)


def end_to_end_step(head: Head, data: MappingBuffer, view: int, center: torch.Tensor, optimizer,
                    ransac: RansacOptions, options: MappingOptions, device: torch.device,
                    generator: Optional[torch.Generator] = None) -> Optional[float]:
    """One optimiser step on one view's expected loss; None when the view had no valid hypothesis."""
    loss, details = view_expected_loss(head, data, view, center, ransac, options, device, generator)
    if details.get("reason"):
        return None
    value = float(loss.detach())
    if not math.isfinite(value):
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # The expected loss can spike on a bad view; bounded steps keep a good initialisation good.
    nn.utils.clip_grad_norm_(head.parameters(), 1.0)
    optimizer.step()
    return value


# --------------------------------------------------------------------------------------------
# full mode: the whole network on whole images (DSAC*-style)


def full_training_stage(network: SceneCoordinateNetwork, mapping: FrameRecordSet, options: MappingOptions,
                        device: torch.device, context: StageContext, end_to_end: bool,
                        state: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train encoder + head on whole augmented images, one image per step (DSAC* batch 1).

    Stage 1 (end_to_end False): Euclidean coordinate loss where depth exists, else ACE's
    reprojection loss with DSAC*'s depth constraints; Adam at ``full_lr``. Stage 2 (end_to_end):
    the DSAC expected pose loss on the plain view, Adam at ``full_e2e_lr`` (DSAC*: 1e-6).
    """
    network.to(device).train()
    lr = options.full_e2e_lr if end_to_end else options.full_lr
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    state = _stage_state(state, skipped=0)
    sampler = EpochSampler(len(mapping), options.seed + (5 if end_to_end else 4), **state["sampler"])
    run = _StageRun(context, state, optimizer, sampler, lambda: {"network": network.state_dict()})
    rng = np.random.default_rng([options.seed, 7 if end_to_end else 6, state["step"]])
    schedule = HeadTrainingOptions(loss="reprojection", clamp_start_px=options.clamp_start_px,
                                   clamp_end_px=options.clamp_end_px)
    ransac = RansacOptions(hypotheses=options.e2e_hypotheses,
                           max_refinement_iterations=options.e2e_refinement_iterations)
    use_depth = options.mode != "rgb" and any(d is not None for d in mapping.depth_m)
    context.progress.update(stage="full: end-to-end" if end_to_end else "full: network")
    running = None
    while not run.finished():
        progress = run.progress()
        step_start = time.perf_counter()
        index = int(sampler.next(1)[0])
        view = make_view(mapping.gray[index], mapping.image_sizes[index], None if end_to_end else rng, options)
        coords = network(view.tensor.to(device))[0].reshape(3, -1).T[torch.from_numpy(view.inside).to(device)]
        pixels = view.pixels_xy[view.inside]
        pose = mapping.world_T_cam[index]
        intrinsics = mapping.intrinsics[index]
        if end_to_end:
            loss, details = expected_pose_loss(torch.as_tensor(pixels, device=device), coords, intrinsics, pose, ransac)
            ok = not details.get("reason")
        else:
            if use_depth and mapping.depth_m[index] is not None:
                target = cell_targets(mapping.depth_m[index].astype(np.float32), pose, intrinsics, pixels)
                loss = coords_loss(coords, torch.as_tensor(target, device=device))
            else:
                clamp = schedule.clamp_start_px * (schedule.clamp_end_px / schedule.clamp_start_px) ** progress
                n = len(pixels)
                cam_T_world = torch.as_tensor(np.linalg.inv(pose), dtype=torch.float32, device=device).expand(n, 4, 4)
                K = torch.as_tensor(intrinsics.K, dtype=torch.float32, device=device).expand(n, 3, 3)
                loss = reprojection_loss(coords, torch.as_tensor(pixels, dtype=torch.float32, device=device),
                                         cam_T_world, K, clamp, schedule)
            ok = True
        value = float(loss.detach())
        if ok and math.isfinite(value):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if end_to_end:
                nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            running = value if running is None else 0.95 * running + 0.05 * value
            state["losses"].append((state["step"], round(value, 5)))
            context.progress.update(loss=running)
        else:
            state["skipped"] += 1
        context.timer.add("full_e2e_steps" if end_to_end else "full_steps", time.perf_counter() - step_start)
        state["step"] += 1
        if state["step"] % 5 == 0:
            run.periodic()
    run.snapshot()
    network.eval()
    return state


def validate_network(network: SceneCoordinateNetwork, validation: FrameRecordSet, options: MappingOptions,
                     device: torch.device, max_frames: int = 10) -> dict[str, Any]:
    """Median pose error of held-out frames with the whole network (full mode)."""
    if len(validation) == 0:
        return {}
    picks = list(range(0, len(validation), max(1, len(validation) // max_frames)))[:max_frames]
    errors = []
    was_training = network.training
    network.eval()
    with torch.no_grad():
        for seed, i in enumerate(picks):
            view = make_view(validation.gray[i], validation.image_sizes[i], None, options)
            coords = network(view.tensor.to(device))[0].reshape(3, -1).T
            errors.append(_pose_error(view.pixels_xy, coords, validation.intrinsics[i], validation.world_T_cam[i],
                                      64, seed))
    network.train(was_training)
    return summarize_errors(errors)


# --------------------------------------------------------------------------------------------
# checkpoints


class Checkpoints:
    """``<out>.ckpt/``: buffer.pt (written once) and state.pt (rewritten atomically)."""

    def __init__(self, out_path: Path) -> None:
        self.directory = Path(str(out_path) + ".ckpt")

    @property
    def state_path(self) -> Path:
        return self.directory / "state.pt"

    @property
    def buffer_path(self) -> Path:
        return self.directory / "buffer.pt"

    def _save(self, payload: Any, path: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".partial")
        torch.save(payload, temporary)
        os.replace(temporary, path)

    def save_state(self, state: dict[str, Any]) -> None:
        self._save(state, self.state_path)

    def load_state(self) -> Optional[dict[str, Any]]:
        if not self.state_path.exists():
            return None
        return torch.load(self.state_path, map_location="cpu", weights_only=True)

    def save_buffer(self, data: MappingBuffer) -> None:
        b = data.buffer
        self._save({"features": b.features, "coords_world_m": b.coords_world_m, "pixels_xy": b.pixels_xy,
                    "frame_index": b.frame_index, "cam_T_world": b.cam_T_world, "intrinsics_K": b.intrinsics_K,
                    "view_frame": torch.as_tensor(data.view_frame), "view_pass": torch.as_tensor(data.view_pass),
                    "view_rows": torch.as_tensor(data.view_rows), "mapping_frames": data.mapping_frames,
                    "scene_center_m": [float(v) for v in data.scene_center_m], "has_depth": data.has_depth,
                    "validation": [{"features": f, "pixels_xy": torch.as_tensor(p), "K": torch.as_tensor(k.K),
                                    "size": [k.width_px, k.height_px], "world_T_cam": torch.as_tensor(w)}
                                   for f, p, k, w in data.validation]}, self.buffer_path)

    def load_buffer(self) -> Optional[MappingBuffer]:
        if not self.buffer_path.exists():
            return None
        p = torch.load(self.buffer_path, map_location="cpu", weights_only=True)
        buffer = PixelBuffer(p["features"], p["coords_world_m"], p["pixels_xy"], p["frame_index"], p["cam_T_world"],
                             p["intrinsics_K"])
        validation = [(v["features"], v["pixels_xy"].numpy(), Intrinsics.from_K(v["K"].numpy(), *v["size"]),
                       v["world_T_cam"].numpy()) for v in p["validation"]]
        return MappingBuffer(buffer, p["view_frame"].numpy(), p["view_pass"].numpy(), p["view_rows"].numpy(),
                             int(p["mapping_frames"]), validation, np.asarray(p["scene_center_m"]),
                             bool(p["has_depth"]))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class MappingResult:
    """What ``map_recording`` produced: the map path, the network, and the run's record."""

    path: Path
    network: SceneCoordinateNetwork
    training: dict[str, Any]


def _frames_source(data: Any, recording_options: Optional[dict[str, Any]] = None
                   ) -> tuple[Iterable[Frame], Optional[int], str]:
    """(frames, count if known, description) from a path (folder / bag, opened with
    ``recording_options``: topics and frames) or an iterable of Frames."""
    if isinstance(data, (str, os.PathLike)):
        from dsac_ros.data import iterate_then_close, open_recording

        recording = open_recording(data, **(recording_options or {}))
        return iterate_then_close(recording), len(recording), str(data)
    frames = data
    count = len(frames) if hasattr(frames, "__len__") else None
    return frames, count, "<frames>"


def map_recording(data: Any, out_path: str | os.PathLike, options: MappingOptions = MappingOptions(),
                  resume: bool = False, keep_checkpoint: bool = False,
                  log: Callable[[str], None] = logger.info,
                  recording_options: Optional[dict[str, Any]] = None) -> MappingResult:
    """Map a recording (folder / bag path, or an iterable of Frames) into a map file at ``out_path``.

    Frames need images, intrinsics and ground-truth poses (world_T_cam); ``rgbd`` also needs depth.
    ``recording_options`` name a bag's topics and frames (``dsac_ros.data.open_recording``).
    With ``resume``, a checkpoint left by an interrupted run of the same output is continued
    (its options are used; the data is read again only in ``full`` mode or without a buffer).
    Raises MappingError for unusable data or options.
    """
    out_path = Path(out_path)
    checkpoints = Checkpoints(out_path)
    saved = checkpoints.load_state() if resume else None
    if saved is not None:
        known = {f.name for f in dataclasses.fields(MappingOptions)}
        options = MappingOptions(**{k: tuple(v) if k in ("scale_range",) else v
                                    for k, v in saved["options"].items() if k in known}
                                 | {"progress": options.progress, "device": options.device,
                                    "max_steps": options.max_steps, "max_e2e_steps": options.max_e2e_steps})
        log(f"resuming {checkpoints.directory} at stage {saved['stage']} ({saved['spent_s']:.0f} s spent)")
    elif not resume:
        checkpoints.remove()
    if options.threads:
        torch.set_num_threads(int(options.threads))
    device = resolve_device(options.device)
    log(f"mapping on {describe_device(device)}, mode {options.mode}, {options.minutes:g} min budget, "
        f"end-to-end {'on' if options.end_to_end else 'off'}")
    timer = StageTimer(saved["timings"] if saved else None)
    total_s = options.minutes * 60.0
    progress = Progress(total_s, options.progress, start_s=saved["spent_s"] if saved else 0.0)
    try:
        if options.mode == "full":
            result = _map_full(data, out_path, options, device, timer, progress, checkpoints, saved, log,
                               recording_options)
        else:
            result = _map_head(data, out_path, options, device, timer, progress, checkpoints, saved, log,
                               recording_options)
    finally:
        progress.close()
    if not keep_checkpoint:
        checkpoints.remove()
    return result


def _run_info(options: MappingOptions, device: torch.device, source: str) -> dict[str, Any]:
    return {"mode": options.mode, "network": options.network, "minutes": options.minutes, "end_to_end": options.end_to_end,
            "device": describe_device(device), "source": source, "options": options.to_dict()}


def _stage_plumbing(record: dict[str, Any], options: MappingOptions, budget: "Budget", progress: Progress,
                    timer: StageTimer, checkpoints: "Checkpoints", validate: Callable[[], dict[str, Any]]
                    ) -> tuple[Callable[[Optional[dict[str, Any]]], None], Callable[..., StageContext]]:
    """(checkpoint, make_context) for a mapping run: checkpoint(stage_state) saves the run record with
    the current stage's state; make_context(seconds, e2e=False) gives a stage its budget and hooks."""

    def checkpoint(stage_state: Optional[dict[str, Any]]) -> None:
        record[f"{record['stage']}_state"] = stage_state
        record["spent_s"] = progress.elapsed()
        record["timings"] = dict(timer.seconds)
        checkpoints.save_state(record)

    every = options.validate_every_s or max(20.0, budget.total_s / 6.0)

    def make_context(seconds: float, e2e: bool = False) -> StageContext:
        max_steps = options.max_e2e_steps if e2e and options.max_e2e_steps is not None else options.max_steps
        return StageContext(seconds, progress, timer, validate, every, checkpoint, options.checkpoint_every_s,
                            max_steps)

    return checkpoint, make_context


def _map_head(data, out_path, options, device, timer, progress, checkpoints, saved, log,
              recording_options=None) -> MappingResult:
    encoder, encoder_config, encoder_info = load_mapping_encoder(options.encoder_path)
    if saved is not None and saved.get("encoder"):
        # The buffer was made with these weights (a calibrated random encoder differs from a fresh one).
        encoder.load_state_dict(saved["encoder"])
        encoder_info = dict(saved.get("encoder_info") or encoder_info)
    use_depth = options.mode == "rgbd"
    memory = uses_memory_head(options)
    data_info: dict[str, Any] = saved["data_info"] if saved else {}
    buffer_data = checkpoints.load_buffer() if saved else None
    source = saved["source"] if saved else ""
    if buffer_data is None:
        frames, count, source = _frames_source(data, recording_options)
        progress.update(stage="reading")
        mapping, validation, data_info = split_frames(frames, options, timer, keep_depth=use_depth,
                                                      on_frame=lambda i: progress.update() if i % 10 == 0 else None)
        if use_depth and not any(d is not None for d in mapping.depth_m):
            raise MappingError("rgbd mode needs depth images, and the recording has none; use --mode rgb")
        if encoder_info["encoder"].startswith("random"):
            picks = range(0, len(mapping), max(1, len(mapping) // 8))
            views = [make_view(mapping.gray[i], mapping.image_sizes[i], None, options).tensor for i in picks]
            same_size = [v for v in views if v.shape == views[0].shape]
            calibrate_random_encoder(encoder, torch.cat(same_size))
            encoder_info["encoder"] += ", unit-variance calibrated on mapping frames"
        progress.update(stage="buffer")
        # A memory head keeps the plain views only (augmented copies would double the search).
        buffer_options = dataclasses.replace(options, augment_passes=1) if memory else options
        buffer_data = build_buffer(mapping, validation, encoder, buffer_options, device, timer, use_depth,
                                   on_view=lambda i, n: progress.update() if i % 10 == 0 else None,
                                   buffer_seconds=options.buffer_fraction * options.minutes * 60.0 - progress.elapsed())
        del mapping, validation
        data_info.update(mapping_frames=buffer_data.mapping_frames, validation_frames=len(buffer_data.validation),
                         buffer_rows=len(buffer_data.buffer), views=len(buffer_data.view_rows),
                         rows_with_depth=int(buffer_data.buffer.has_depth().sum()))
        data_info["passes"] = int(buffer_data.view_pass.max()) + 1
        log(f"buffer: {data_info['mapping_frames']} mapping frames x {data_info['passes']} views = "
            f"{data_info['buffer_rows']} rows; {data_info['validation_frames']} frames held out")
        with timer.measure("checkpoint"):
            checkpoints.save_buffer(buffer_data)
    budget = Budget(**saved["budget"]) if saved else split_budget(options.minutes * 60.0, progress.elapsed(), options)
    config = {"name": f"{options.network}-head", "encoder": dict(encoder_config),
              "head": network_config(options.network)["head"]}
    if memory:
        config["head"].update(frames=int(buffer_data.mapping_frames), retrieve_frames=int(options.retrieve_frames),
                              cells=max(stop - start for _, _, start, stop in buffer_data.plain_views()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        head = build_head(encoder.feature_channels, config["head"])
    network = SceneCoordinateNetwork(encoder, head, buffer_data.scene_center_m, config)
    record: dict[str, Any] = saved or {"stage": "head", "head_state": None, "e2e_state": None}
    record.update(options=options.to_dict(), budget=dataclasses.asdict(budget), data_info=data_info,
                  source=source, version=CHECKPOINT_VERSION, encoder_info=encoder_info,
                  encoder={k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()})

    checkpoint, make_context = _stage_plumbing(record, options, budget, progress, timer, checkpoints,
                                               lambda: validate_head(head, buffer_data, device, max_frames=5))

    if saved is None:
        checkpoint(None)  # from here on, --resume finds the buffer and the budget

    for key in ("e2e_state", "head_state"):  # the latest weights a checkpoint holds
        if record.get(key) and record[key].get("head"):
            head.load_state_dict(record[key]["head"])
            break
    if record["stage"] == "head":
        loss_kind = "coords" if use_depth else "reprojection"
        if memory:
            progress.update(stage="memory")
            with timer.measure("memory"):
                stage_state = fill_memory(head, buffer_data, use_depth, log)
        else:
            stage_state = train_head_stage(head, buffer_data, loss_kind, options, device,
                                           make_context(budget.head_s), record.get("head_state"))
        checkpoint(stage_state)
        record["stage"] = "e2e" if options.end_to_end else "done"
        checkpoints.save_state(record)
    if record["stage"] == "e2e":
        stage_state = end_to_end_stage(head, buffer_data, options, device, make_context(budget.e2e_s, True),
                                       record.get("e2e_state"))
        checkpoint(stage_state)
        record["stage"] = "done"
        checkpoints.save_state(record)
    progress.update(stage="final validation")
    with timer.measure("validation"):
        final = validate_head(head, buffer_data, device, max_frames=10)
    progress.update(validation=_format_validation(final))
    training = _training_record(options, device, source, encoder_info, data_info, budget, timer, record, final,
                                progress.elapsed())
    return _save_result(out_path, network, options, training, timer, final, log)


def _save_result(out_path, network, options, training, timer, final, log) -> MappingResult:
    """Write the map file (CPU, eval mode) with its training record; the record gets the final timings."""
    from dsac_ros.mapfile import save_map

    with timer.measure("save"):
        network.cpu().eval()
        save_map(out_path, network, options.input_height_px, DEFAULT_NORMALIZATION, training)
    training["timings_s"] = {k: round(v, 2) for k, v in timer.seconds.items()}
    log(f"map written to {out_path}: {json.dumps(final)}")
    return MappingResult(out_path, network, training)


def _stage_summary(state: Optional[dict[str, Any]]) -> dict[str, Any]:
    if not state:
        return {}
    losses = state.get("losses") or []
    values = [value for _, value in losses]
    window = max(1, len(values) // 10)
    return {"steps": int(state.get("step", 0)), "seconds": round(float(state.get("elapsed_s", 0.0)), 1),
            "first_loss": values[0] if values else None, "last_loss": values[-1] if values else None,
            # means over the first and last tenth of the logged losses (single steps are noisy)
            "early_loss": float(np.mean(values[:window])) if values else None,
            "late_loss": float(np.mean(values[-window:])) if values else None,
            "skipped": int(state.get("skipped", 0)), "validations": state.get("validations", [])}


def _training_record(options, device, source, encoder_info, data_info, budget, timer, record, final,
                     elapsed_s) -> dict[str, Any]:
    training = _run_info(options, device, source)
    training.update(encoder_info)
    training.update(data=data_info, budget_s=dataclasses.asdict(budget),
                    stages={"head": _stage_summary(record.get("head_state")),
                            "end_to_end": _stage_summary(record.get("e2e_state")),
                            "full": _stage_summary(record.get("full_state")),
                            "full_end_to_end": _stage_summary(record.get("full_e2e_state"))},
                    validation=final, wall_seconds=round(elapsed_s, 1),
                    timings_s={k: round(v, 2) for k, v in timer.seconds.items()})
    return training


def _map_full(data, out_path, options, device, timer, progress, checkpoints, saved, log,
              recording_options=None) -> MappingResult:
    """Full mode: whole network on whole images (stage 1), then optional end-to-end (stage 2)."""
    from dsac_ros.network import build_network

    frames, count, source = _frames_source(data, recording_options)
    progress.update(stage="reading")
    mapping, validation, data_info = split_frames(frames, options, timer, keep_depth=True)
    data_info.update(mapping_frames=len(mapping), validation_frames=len(validation))
    center = scene_center(mapping, any(d is not None for d in mapping.depth_m))
    if options.encoder_path:
        encoder, encoder_config, encoder_info = load_mapping_encoder(options.encoder_path)
        head_config = network_config(options.network)["head"]
        config = {"name": f"full-{options.network}", "encoder": dict(encoder_config), "head": head_config}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            head = build_head(encoder.feature_channels, head_config)
        network = SceneCoordinateNetwork(encoder, head, center, config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            network = build_network(options.network, center)
        encoder_info = {"encoder": f"trained from scratch ({options.network})", "encoder_sha256": ""}
    budget = Budget(**saved["budget"]) if saved else split_budget(options.minutes * 60.0, progress.elapsed(), options)
    record: dict[str, Any] = saved or {"stage": "full", "full_state": None, "full_e2e_state": None}
    record.update(options=options.to_dict(), budget=dataclasses.asdict(budget), data_info=data_info, source=source,
                  version=CHECKPOINT_VERSION)

    checkpoint, make_context = _stage_plumbing(
        record, options, budget, progress, timer, checkpoints,
        lambda: validate_network(network, validation, options, device, max_frames=5))

    for key in ("full_e2e_state", "full_state"):
        if record.get(key) and record[key].get("network"):
            network.load_state_dict(record[key]["network"])
            break
    if record["stage"] == "full":
        stage_state = full_training_stage(network, mapping, options, device, make_context(budget.head_s),
                                          False, record.get("full_state"))
        checkpoint(stage_state)
        record["stage"] = "full_e2e" if options.end_to_end else "done"
        checkpoints.save_state(record)
    if record["stage"] == "full_e2e":
        stage_state = full_training_stage(network, mapping, options, device, make_context(budget.e2e_s, True),
                                          True, record.get("full_e2e_state"))
        checkpoint(stage_state)
        record["stage"] = "done"
        checkpoints.save_state(record)
    progress.update(stage="final validation")
    with timer.measure("validation"):
        final = validate_network(network, validation, options, device, max_frames=10)
    training = _training_record(options, device, source, encoder_info, data_info, budget, timer, record, final,
                                progress.elapsed())
    return _save_result(out_path, network, options, training, timer, final, log)


__all__ = ["MODES", "MappingOptions", "MappingError", "MappingResult", "MappingBuffer", "map_recording",
           "make_view", "augmentation_affine", "view_cell_pixels", "split_frames", "build_buffer", "EpochSampler",
           "train_head_stage", "end_to_end_stage", "view_expected_loss", "end_to_end_step", "full_training_stage",
           "validate_head", "validate_network", "load_mapping_encoder", "calibrate_random_encoder", "split_budget",
           "Budget", "StageTimer", "Checkpoints", "DEFAULT_ENCODER_PATH"]
