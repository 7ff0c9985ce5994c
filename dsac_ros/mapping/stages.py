"""The training stages of a mapping run (head, memory, end-to-end, full), each resumable."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from dsac_ros.buffer import cell_targets
from dsac_ros.dsac import RansacOptions
from dsac_ros.dsac_training import expected_pose_loss
from dsac_ros.head_training import (annealed_clamp_px, coords_loss, head_forward_flat, one_cycle_lr,
                                    reprojection_loss)
from dsac_ros.mapping.clock import Progress, StageTimer
from dsac_ros.mapping.frames import FrameRecordSet, MappingBuffer
from dsac_ros.mapping.options import MappingError, MappingOptions
from dsac_ros.mapping.validation import format_validation
from dsac_ros.mapping.views import make_view
from dsac_ros.network import Head, SceneCoordinateNetwork

logger = logging.getLogger(__name__)


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
        self.running: Optional[float] = None
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

    def log_loss(self, value: float, digits: int, every_step: bool = True) -> None:
        """Record a step's loss: the running mean (0.95 EMA) for the display and, unless only
        tracking (every_step False: the head stage logs one step in 20), the (step, loss) pair."""
        self.running = value if self.running is None else 0.95 * self.running + 0.05 * value
        if every_step:
            self.state["losses"].append((self.state["step"], round(value, digits)))
            self.context.progress.update(loss=self.running)

    def periodic(self) -> None:
        """Validation and checkpointing (after a snapshot) when their intervals have passed."""
        context, elapsed = self.context, self.elapsed()
        if elapsed - self._last["validation"] >= context.validate_every_s:
            with context.timer.measure("validation"):
                result = context.validate()
            self._last["validation"] = elapsed
            self.state.setdefault("validations", []).append({"stage_seconds": round(elapsed, 1), **result})
            context.progress.update(validation=format_validation(result))
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
    schedule = dataclasses.replace(options.head, loss=loss_kind)
    head.to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=schedule.lr_min, weight_decay=0.0)
    state = _stage_state(state)
    sampler = EpochSampler(len(usable), options.seed + 1, **state["sampler"])
    run = _StageRun(context, state, optimizer, sampler, lambda: {"head": head.state_dict()})
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32, device=device).view(1, 3)
    on_device = buffer.to(device) if device.type != "cpu" else buffer
    batch = min(options.batch_size, len(usable))
    context.progress.update(stage=f"head ({loss_kind})")
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
            clamp = annealed_clamp_px(progress, schedule)
            loss = reprojection_loss(pred, on_device.pixels_xy[pick], on_device.cam_T_world[views],
                                     on_device.intrinsics_K[views], clamp, schedule)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        context.timer.add("head_steps", time.perf_counter() - step_start)
        state["step"] += 1
        run.log_loss(float(loss.detach()), 6, every_step=state["step"] % 20 == 1)
        if state["step"] % 20 == 0:
            run.periodic()
    run.snapshot()
    state["samples_seen"] = state["step"] * batch
    head.eval()
    return state


# A dense memory map holds every cell of every kept frame; above this size, ``fill_memory`` suggests
# thinning frames (compact maps are quantised right after filling).
LARGE_MEMORY_MAP_BYTES = 500 * 2**20


def fill_memory(head: nn.Module, data: MappingBuffer, use_depth: bool,
                log: Callable[[str], None] = logger.info, subquantizers: Optional[int] = None,
                seed: int = 0, triangulation: str = "sweep") -> dict[str, Any]:
    """Store every mapping frame's plain view in a (dense) memory head; returns a stage state.

    rgbd: each cell's coordinate from depth and pose. rgb: coordinates from the mapping frames'
    images and known poses: ``triangulation`` "sweep" (``dsac_ros.sweep.sweep_memory``) or
    "matches" (``dsac_ros.memory_head.triangulate_memory``).
    With ``subquantizers``, the filled memory is then compacted (``CompactMemoryHead.from_dense``):
    the state's "head" is the compact head's and "head_config" its architecture.
    A head with ``key_stride`` > 1 keeps keys on every key_stride-th cell of each axis only (after
    triangulation, which uses every cell's features).
    """
    from dsac_ros.compact_memory import CompactMemoryHead
    from dsac_ros.memory_head import triangulate_memory
    from dsac_ros.sweep import sweep_memory

    start = time.perf_counter()
    size_bytes = sum(t.numel() * t.element_size() for t in head.state_dict().values())
    if size_bytes > LARGE_MEMORY_MAP_BYTES and not subquantizers:
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
        fill = sweep_memory if triangulation == "sweep" else triangulate_memory
        triangulated = fill(head, [buffer.pixels_xy[a:b] for _, _, a, b in plain],
                            buffer.cam_T_world[views].double(), buffer.intrinsics_K[views].double(),
                            center.view(3).double())
    if head.key_stride > 1:
        from dsac_ros.subcell import grid_layout

        for _, frame, start_row, stop_row in plain:
            layout = grid_layout(buffer.pixels_xy[start_row:stop_row].double())
            if layout is None:
                raise MappingError(f"mapping frame {frame}: its cells are not a whole grid; key_stride needs one")
            head.keep_key_grid(frame, layout[0])
        head.finish()
    known = int(head.valid.sum())
    log(f"memory: {len(plain)} frames, {known} of {sum(b - a for _, _, a, b in plain)} cells with a "
        f"coordinate{f' ({triangulation})' if triangulated else ''}, {time.perf_counter() - start:.1f} s")
    if known == 0:
        raise MappingError("no mapping cell has a scene coordinate (no depth, nothing triangulated)")
    state = {"step": 0, "losses": [], "memory_cells": known, "triangulation": triangulated}
    if subquantizers:
        quantize_start = time.perf_counter()
        compact = CompactMemoryHead.from_dense(head, subquantizers, seed)
        state.update(head=compact.state_dict(), quantize_s=round(time.perf_counter() - quantize_start, 2),
                     head_config=compact.config)
        log(f"memory: {compact.entries} keys quantised to {subquantizers} bytes in {state['quantize_s']:.1f} s")
    else:
        state["head"] = head.state_dict()
    state["elapsed_s"] = time.perf_counter() - start
    return state


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
    ransac = options.e2e_ransac
    rng = torch.Generator().manual_seed(options.seed + 3 + state["step"])
    context.progress.update(stage="end-to-end")
    while not run.finished():
        step_start = time.perf_counter()
        view = int(sampler.next(1)[0])
        value = end_to_end_step(head, data, view, center, optimizer, ransac, options, device, rng)
        context.timer.add("e2e_steps", time.perf_counter() - step_start)
        state["step"] += 1
        if value is None:
            state["skipped"] += 1
        else:
            run.log_loss(value, 4)
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
    schedule = dataclasses.replace(options.head, loss="reprojection")
    ransac = options.e2e_ransac
    use_depth = options.mode != "rgb" and any(d is not None for d in mapping.depth_m)
    context.progress.update(stage="full: end-to-end" if end_to_end else "full: network")
    while not run.finished():
        progress = run.progress()
        step_start = time.perf_counter()
        index = int(sampler.next(1)[0])
        view = make_view(mapping.gray[index], mapping.image_sizes[index], None if end_to_end else rng,
                         options.augmentation, options.normalization)
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
                clamp = annealed_clamp_px(progress, schedule)
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
            run.log_loss(value, 5)
        else:
            state["skipped"] += 1
        context.timer.add("full_e2e_steps" if end_to_end else "full_steps", time.perf_counter() - step_start)
        state["step"] += 1
        if state["step"] % 5 == 0:
            run.periodic()
    run.snapshot()
    network.eval()
    return state
