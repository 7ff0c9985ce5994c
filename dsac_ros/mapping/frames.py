"""Frames in, buffer out: reading a recording into mapping / validation sets and encoding them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

from dsac_ros.data.recording import RecordingOptions
from dsac_ros.buffer import PixelBuffer, cell_targets
from dsac_ros.frame import Frame
from dsac_ros.mapping.clock import StageTimer
from dsac_ros.mapping.keyframes import KeyframeSelector
from dsac_ros.mapping.options import MappingError, MappingOptions
from dsac_ros.mapping.views import make_view
from dsac_ros.network import Encoder, network_input_size, to_gray_resized


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
                 keep_depth: bool = True, on_frame: Optional[Callable[[int], None]] = None,
                 keyframes: Optional[KeyframeSelector] = None) -> tuple[FrameRecordSet, FrameRecordSet, dict]:
    """Read frames into (mapping, validation) sets at the network input size.

    Every ``frame_stride``-th frame is used; of those, every ``validation_every``-th (offset to the
    middle of each block, at most ``max_validation_frames``) is held back for validation. Frames
    without a valid pose are skipped and counted. With a ``keyframes`` selector, only the mapping
    frames it keeps are stored (a long recording never sits in memory whole).
    """
    mapping, validation = FrameRecordSet(), FrameRecordSet()
    skipped: dict[str, int] = {}
    redundant = 0
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
        hold_out = (used % options.validation_every == options.validation_every // 2
                    and len(validation) < options.max_validation_frames)
        used += 1
        if not hold_out and keyframes is not None:
            with timer.measure("keyframes"):
                keep = keyframes.consider(np.asarray(frame.world_T_cam, dtype=np.float64), frame.intrinsics,
                                          frame.depth_m if keep_depth else None)
            if not keep:
                redundant += 1
                continue
        with timer.measure("prepare"):
            input_size = network_input_size(frame.intrinsics.width_px, frame.intrinsics.height_px,
                                            options.input_height_px)
            gray = to_gray_resized(frame.image_rgb, input_size)
        (validation if hold_out else mapping).append(frame, gray, index, keep_depth)
    if len(mapping) == 0:
        detail = f" (skipped: {skipped})" if skipped else ""
        raise MappingError(f"no usable mapping frames: frames need an image, intrinsics and a pose{detail}")
    info = {"frames_read": index + 1, "skipped": skipped}
    if keyframes is not None:
        info["keyframes"] = {"considered": keyframes.considered, "kept": keyframes.kept, "redundant": redundant}
    return mapping, validation, info


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
    """Encoder features of every mapping frame in ``augmentation.passes`` views, plus plain validation features.

    Pass 0 is the frame as the localizer sees it; later passes are random augmentations
    (seeded by options.seed). With ``options.augmentation.passes`` None, passes continue while the
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
    passes = options.augmentation.passes or options.augmentation.max_passes
    total_views = len(mapping) * passes
    start = time.perf_counter()
    for pass_index in range(passes):
        if pass_index >= 2 and options.augmentation.passes is None and buffer_seconds is not None:
            per_pass = (time.perf_counter() - start) / pass_index
            if (pass_index + 1) * per_pass > buffer_seconds:
                break
        for frame_index in range(len(mapping)):
            with timer.measure("augment"):
                view = make_view(mapping.gray[frame_index], mapping.image_sizes[frame_index],
                                 None if pass_index == 0 else rng, options.augmentation, options.normalization)
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
            view = make_view(validation.gray[i], validation.image_sizes[i], None, options.augmentation,
                             options.normalization)
            features = encoder(view.tensor.to(device))
            flat = features[0].reshape(features.shape[1], -1).T.to(torch.float16).cpu()
            held_out.append((flat, view.pixels_xy, validation.intrinsics[i], validation.world_T_cam[i]))
    return MappingBuffer(buffer, np.asarray(view_frame), np.asarray(view_pass), np.asarray(view_rows, dtype=np.int64),
                         len(mapping), held_out, scene_center(mapping, use_depth), use_depth)


def frames_source(data: Any, recording: Optional[RecordingOptions] = None
                   ) -> tuple[Iterable[Frame], Optional[int], str]:
    """(frames, count if known, description) from a path (folder / bag, opened with
    ``recording``: its topics and frames) or an iterable of Frames."""
    if isinstance(data, (str, os.PathLike)):
        from dsac_ros.data import iterate_then_close, open_recording

        reader = open_recording(data, recording)
        return iterate_then_close(reader), len(reader), str(data)
    frames = data
    count = len(frames) if hasattr(frames, "__len__") else None
    return frames, count, "<frames>"
