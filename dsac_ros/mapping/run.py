"""Mapping: frames with poses -> a trained scene coordinate network -> a map file.

Pipeline (``map_recording``), on a wall-clock budget:

    read frames --> hold out every k-th frame for validation
      --> memory heads: keep the keyframes only, frames that show something the memory has not
          seen (``dsac_ros.mapping.keyframes``), so a long recording never sits in memory whole
      --> buffer: frozen encoder features of each mapping frame in ``augmentation.passes`` views
          (pass 0 as the localizer sees it, then random scale / in-plane rotation /
          brightness-contrast); every cell keeps its exact pixel in the ORIGINAL image, so targets
          and reprojection use the frame's own intrinsics
      --> the head:
          * ``memory`` (default): the plain views' cells stored as (feature, coordinate) pairs
            (``dsac_ros.memory_head``); ``rgbd`` takes coordinates from depth + pose, ``rgb``
            sweeps each cell's depth through similar mapping frames' features (``dsac_ros.sweep``;
            or triangulates nearest-key matches). Seconds, no training. Then the
            known cells are compacted: 16-byte product-quantised keys (``dsac_ros.compact_memory``)
          * ``fast`` / ``ace``: an MLP head trained on random buffer rows (``rgbd``: distance to
            the ground-truth coordinate; ``rgb``: ACE's reprojection loss with an annealed clamp
            and DSAC*'s depth constraints)
      --> optional end-to-end stage: the DSAC expected pose loss (``dsac_training.expected_pose_loss``) on
          whole buffered views, gradients into the head (a memory head's stored coordinates;
          each view looks up the memory with its own frame left out)
      --> map file with training metadata.

``full`` mode trains the whole network (encoder and head) on whole augmented images, DSAC*
style (stage 1: coordinate or reprojection loss; stage 2: expected pose loss), for GPU users.

Budget split: reading + buffering take what they take (measured and reported); augmentation
passes beyond the second are added only while the buffer is predicted to finish within
``budget.buffer_fraction`` (30 %) of the budget. Of the rest, a small reserve (3 %, at least 2 s) goes to
final validation and saving, then ``budget.head_fraction`` (default 80 %) to the first stage and the
remainder to the end-to-end stage (all of it to the first stage without it). A memory head
needs only the end-to-end share; the rest of the budget is not spent.

Long runs are resumable: a checkpoint directory next to the output (``MAP.pt.ckpt/``) holds the
buffer and the training state (weights, optimiser, step, time spent), written periodically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from dsac_ros.data.recording import RecordingOptions
from dsac_ros.device import describe_device, resolve_device
from dsac_ros.encoder_file import calibrate_random_encoder, load_mapping_encoder
from dsac_ros.mapping.checkpoints import Checkpoints, RunState, Stage
from dsac_ros.mapping.clock import BudgetClock, Progress, StageTimer
from dsac_ros.mapping.keyframes import KeyframeSelector
from dsac_ros.mapping.frames import MappingBuffer, build_buffer, frames_source, scene_center, split_frames
from dsac_ros.mapping.options import Budget, MappingError, MappingOptions, split_budget, uses_memory_head
from dsac_ros.mapping.stages import StageContext, end_to_end_stage, fill_memory, full_training_stage, train_head_stage
from dsac_ros.mapping.validation import format_validation, validate_head, validate_network
from dsac_ros.mapping.views import make_view
from dsac_ros.network import SceneCoordinateNetwork, build_head, network_config

logger = logging.getLogger(__name__)

# Held-out frames meet the memory without its views within this distance (``validate_head``).
VALIDATION_HIDE_WITHIN_M = 0.10


@dataclass
class MappingResult:
    """What ``map_recording`` produced: the map path, the network, and the run's record."""

    path: Path
    network: SceneCoordinateNetwork
    training: dict[str, Any]


def map_recording(data: Any, out_path: str | os.PathLike, options: MappingOptions = MappingOptions(),
                  resume: bool = False, keep_checkpoint: bool = False,
                  log: Callable[[str], None] = logger.info,
                  recording: Optional[RecordingOptions] = None) -> MappingResult:
    """Map a recording (folder / bag path, or an iterable of Frames) into a map file at ``out_path``.

    Frames need images, intrinsics and ground-truth poses (world_T_cam); ``rgbd`` also needs depth.
    ``recording`` names a bag's topics and frames (``dsac_ros.data.RecordingOptions``).
    With ``resume``, a checkpoint left by an interrupted run of the same output is continued
    (its options are used; the data is read again only in ``full`` mode or without a buffer).
    Raises MappingError for unusable data or options (CheckpointError for a checkpoint of
    another format version).
    """
    out_path = Path(out_path)
    checkpoints = Checkpoints(out_path)
    saved = checkpoints.load_state() if resume else None
    if saved is not None:
        options = MappingOptions.from_dict(saved.options, progress=options.progress, device=options.device,
                                           max_steps=options.max_steps, max_e2e_steps=options.max_e2e_steps)
        log(f"resuming {checkpoints.directory} at stage {saved.stage.value} ({saved.spent_s:.0f} s spent)")
    elif not resume:
        checkpoints.remove()
    if options.threads:
        torch.set_num_threads(int(options.threads))
    run = MappingRun(out_path, options, checkpoints, saved, log)
    try:
        result = run.map_full(data, recording) if options.mode == "full" else \
            run.map_head(data, recording)
    finally:
        run.progress.close()
    if not keep_checkpoint:
        checkpoints.remove()
    return result


class MappingRun:
    """One mapping run: its options and device, the budget clock, where time goes, the progress
    display, the checkpoints and the typed ``RunState`` (``None`` until the buffer exists).

    ``map_head`` / ``map_full`` run the stages of their mode from wherever the state stands;
    each stage's state is checkpointed when it ends (and periodically from inside the stage).
    """

    def __init__(self, out_path: Path, options: MappingOptions, checkpoints: Checkpoints,
                 saved: Optional[RunState], log: Callable[[str], None]) -> None:
        self.out_path, self.options, self.checkpoints, self.log = out_path, options, checkpoints, log
        self.saved = saved
        self.device = resolve_device(options.device)
        log(f"mapping on {describe_device(self.device)}, mode {options.mode}, {options.minutes:g} min budget, "
            f"end-to-end {'on' if options.end_to_end else 'off'}")
        self.timer = StageTimer(saved.timings if saved else None)
        self.clock = BudgetClock(options.minutes * 60.0, saved.spent_s if saved else 0.0)
        self.progress = Progress(self.clock, options.progress)
        self.state: Optional[RunState] = saved

    # --- state and checkpoints ------------------------------------------------------------------

    def checkpoint(self, stage_state: Optional[dict[str, Any]]) -> None:
        """Save the run state with the current stage's state (called by the stages, and at stage ends)."""
        self.state.stage_states[self.state.stage.value] = stage_state
        self.state.spent_s = self.clock.elapsed()
        self.state.timings = dict(self.timer.seconds)
        self.checkpoints.save_state(self.state)

    def advance(self, stage: Stage) -> None:
        self.state.stage = stage
        self.checkpoints.save_state(self.state)

    def budget(self) -> Budget:
        return Budget(**self.saved.budget) if self.saved else \
            split_budget(self.options.minutes * 60.0, self.clock.elapsed(), self.options)

    def run_stages(self, stages: list[tuple[Stage, Callable[[StageContext, Optional[dict[str, Any]]], dict[str, Any]],
                                            float, bool]],
                   validate: Callable[[], dict[str, Any]]) -> None:
        """Run (stage, train(context, saved stage state) -> stage state, seconds, end_to_end) in order,
        from the stage the state stands at; each ends with a checkpoint and the next stage."""
        options = self.options
        every = options.validate_every_s or max(20.0, self.clock.total_s / 6.0)
        order = [stage for stage, *_ in stages] + [Stage.DONE]
        for position, (stage, train, seconds, e2e) in enumerate(stages):
            if self.state.stage != stage:
                continue
            max_steps = options.max_e2e_steps if e2e and options.max_e2e_steps is not None else options.max_steps
            context = StageContext(seconds, self.progress, self.timer, validate, every, self.checkpoint,
                                   options.checkpoint_every_s, max_steps)
            self.checkpoint(train(context, self.state.stage_state(stage)))
            following = order[position + 1]
            if following != Stage.DONE and not options.end_to_end:
                following = Stage.DONE
            self.advance(following)

    # --- head modes (rgbd, rgb) -----------------------------------------------------------------

    def map_head(self, data: Any, recording: Optional[RecordingOptions]) -> MappingResult:
        options, device, timer, progress, saved = self.options, self.device, self.timer, self.progress, self.saved
        encoder, encoder_config, encoder_info = load_mapping_encoder(options.encoder_path)
        if saved is not None and saved.encoder:
            # The buffer was made with these weights (a calibrated random encoder differs from a fresh one).
            encoder.load_state_dict(saved.encoder)
            encoder_info = dict(saved.encoder_info or encoder_info)
        use_depth = options.mode == "rgbd"
        memory = uses_memory_head(options)
        data_info: dict[str, Any] = saved.data_info if saved else {}
        buffer_data = self.checkpoints.load_buffer() if saved else None
        source = saved.source if saved else ""
        if buffer_data is None:
            buffer_data, data_info, source = self._buffer(data, recording, encoder, encoder_info, use_depth,
                                                          memory)
        budget = self.budget()
        config = {"name": f"{options.network}-head", "encoder": dict(encoder_config),
                  "head": network_config(options.network)["head"]}
        if memory:
            config["head"].update(frames=int(buffer_data.mapping_frames), retrieve_frames=int(options.retrieve_frames),
                                  key_stride=int(options.memory.key_stride),
                                  cells=max(stop - start for _, _, start, stop in buffer_data.plain_views()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            head = build_head(encoder.feature_channels, config["head"])
        network = SceneCoordinateNetwork(encoder, head, buffer_data.scene_center_m, config)
        self.state = self._state(saved, Stage.HEAD, budget, data_info, source)
        self.state.encoder_info = encoder_info
        self.state.encoder = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
        if saved is None:
            self.checkpoint(None)  # from here on, --resume finds the buffer and the budget

        def install_head(head_config: dict[str, Any]) -> None:
            """Replace the network's head (the dense memory becomes the compact one once filled)."""
            nonlocal head
            with torch.random.fork_rng(devices=[]):
                head = build_head(encoder.feature_channels, head_config)
            network.head = head
            config["head"] = dict(head_config)
            network.config = dict(config)

        head_state = self.state.stage_state(Stage.HEAD)
        if head_state and head_state.get("head_config"):
            install_head(head_state["head_config"])
        for stage in (Stage.E2E, Stage.HEAD):  # the latest weights a checkpoint holds
            stage_state = self.state.stage_state(stage)
            if stage_state and stage_state.get("head"):
                head.load_state_dict(stage_state["head"])
                break

        def first_stage(context: StageContext, stage_state: Optional[dict[str, Any]]) -> dict[str, Any]:
            if memory:
                progress.update(stage="memory")
                with timer.measure("memory"):
                    state = fill_memory(head, buffer_data, use_depth, self.log,
                                        options.memory.subquantizers, options.seed, options.memory.triangulation)
                if state.get("head_config"):
                    install_head(state["head_config"])
                    head.load_state_dict(state["head"])
                return state
            return train_head_stage(head, buffer_data, "coords" if use_depth else "reprojection", options, device,
                                    context, stage_state)

        self.run_stages([
            (Stage.HEAD, first_stage, budget.head_s, False),
            (Stage.E2E, lambda context, stage_state: end_to_end_stage(head, buffer_data, options, device, context,
                                                                      stage_state), budget.e2e_s, True),
        ], validate=lambda: validate_head(head, buffer_data, device, max_frames=5))  # head: the latest one
        progress.update(stage="final validation")
        with timer.measure("validation"):
            # Every held-out frame (up to max_validation_frames), its 10 cm neighbourhood hidden
            # from memory lookups: the covariance scale is calibrated on test-like views.
            final = validate_head(head, buffer_data, device, max_frames=max(10, len(buffer_data.validation)),
                                  hide_within_m=VALIDATION_HIDE_WITHIN_M if memory else 0.0)
        progress.update(validation=format_validation(final))
        return self._save_result(network, encoder_info, budget, final)

    def _buffer(self, data: Any, recording: Optional[RecordingOptions], encoder, encoder_info: dict[str, Any],
                use_depth: bool, memory: bool) -> tuple[MappingBuffer, dict[str, Any], str]:
        """Read the frames and encode them into the buffer (checkpointed); -> (buffer, data_info, source)."""
        options, timer, progress = self.options, self.timer, self.progress
        frames, count, source = frames_source(data, recording)
        progress.update(stage="reading")
        keyframe_options = options.memory.keyframes.for_mode(options.mode)
        selector = KeyframeSelector(keyframe_options) if memory and keyframe_options.enabled else None
        mapping, validation, data_info = split_frames(frames, options, timer, keep_depth=use_depth,
                                                      on_frame=lambda i: progress.update() if i % 10 == 0 else None,
                                                      keyframes=selector)
        if selector is not None:
            self.log(f"keyframes: {selector.kept} of {selector.considered} mapping frames show enough new "
                     f"({keyframe_options.min_novel_fraction:.0%} of their view, "
                     f"{keyframe_options.max_view_angle_deg:g} deg)")
        if use_depth and not any(d is not None for d in mapping.depth_m):
            raise MappingError("rgbd mode needs depth images, and the recording has none; use --mode rgb")
        if encoder_info["encoder"].startswith("random"):
            picks = range(0, len(mapping), max(1, len(mapping) // 8))
            views = [make_view(mapping.gray[i], mapping.image_sizes[i], None, options.augmentation,
                               options.normalization).tensor for i in picks]
            same_size = [v for v in views if v.shape == views[0].shape]
            calibrate_random_encoder(encoder, torch.cat(same_size))
            encoder_info["encoder"] += ", unit-variance calibrated on mapping frames"
        if memory and options.memory.compact and options.memory.encoder_float16:
            # The map stores the encoder as float16: encode the memory with exactly those weights.
            with torch.no_grad():
                for tensor in encoder.state_dict().values():
                    if tensor.is_floating_point():
                        tensor.copy_(tensor.half().float())
            encoder_info["encoder_float16"] = True
        progress.update(stage="buffer")
        # A memory head keeps the plain views only (augmented copies would double the search).
        buffer_options = dataclasses.replace(options, augmentation=dataclasses.replace(options.augmentation, passes=1)) \
            if memory else options
        buffer_data = build_buffer(mapping, validation, encoder, buffer_options, self.device, timer, use_depth,
                                   on_view=lambda i, n: progress.update() if i % 10 == 0 else None,
                                   buffer_seconds=options.budget.buffer_fraction * options.minutes * 60.0 - self.clock.elapsed())
        del mapping, validation
        data_info.update(mapping_frames=buffer_data.mapping_frames, validation_frames=len(buffer_data.validation),
                         buffer_rows=len(buffer_data.buffer), views=len(buffer_data.view_rows),
                         rows_with_depth=int(buffer_data.buffer.has_depth().sum()))
        data_info["passes"] = int(buffer_data.view_pass.max()) + 1
        self.log(f"buffer: {data_info['mapping_frames']} mapping frames x {data_info['passes']} views = "
                 f"{data_info['buffer_rows']} rows; {data_info['validation_frames']} frames held out")
        with timer.measure("checkpoint"):
            self.checkpoints.save_buffer(buffer_data)
        return buffer_data, data_info, source

    # --- full mode ------------------------------------------------------------------------------

    def map_full(self, data: Any, recording: Optional[RecordingOptions]) -> MappingResult:
        """Full mode: whole network on whole images (stage 1), then optional end-to-end (stage 2)."""
        from dsac_ros.network import build_network

        options, device, timer, progress = self.options, self.device, self.timer, self.progress
        frames, count, source = frames_source(data, recording)
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
        budget = self.budget()
        self.state = self._state(self.saved, Stage.FULL, budget, data_info, source)

        for stage in (Stage.FULL_E2E, Stage.FULL):
            stage_state = self.state.stage_state(stage)
            if stage_state and stage_state.get("network"):
                network.load_state_dict(stage_state["network"])
                break

        def train(end_to_end: bool):
            return lambda context, stage_state: full_training_stage(network, mapping, options, device, context,
                                                                    end_to_end, stage_state)

        self.run_stages([(Stage.FULL, train(False), budget.head_s, False),
                         (Stage.FULL_E2E, train(True), budget.e2e_s, True)],
                        validate=lambda: validate_network(network, validation, options, device, max_frames=5))
        progress.update(stage="final validation")
        with timer.measure("validation"):
            final = validate_network(network, validation, options, device, max_frames=10)
        return self._save_result(network, encoder_info, budget, final)

    # --- the result -----------------------------------------------------------------------------

    def _state(self, saved: Optional[RunState], first: Stage, budget: Budget, data_info: dict[str, Any],
               source: str) -> RunState:
        """The saved state brought up to date, or a fresh one at the mode's first stage."""
        state = saved or RunState(stage=first, options={}, budget={}, data_info={}, source="")
        state.options, state.budget = self.options.to_dict(), dataclasses.asdict(budget)
        state.data_info, state.source = data_info, source
        return state

    def _save_result(self, network: SceneCoordinateNetwork, encoder_info: dict[str, Any], budget: Budget,
                     final: dict[str, Any]) -> MappingResult:
        """Write the map file (CPU, eval mode) with its training record; the record gets the final timings."""
        from dsac_ros.mapfile import save_map

        training = self._training_record(encoder_info, budget, final)
        with self.timer.measure("save"):
            network.cpu().eval()
            save_map(self.out_path, network, self.options.input_height_px, self.options.normalization, training)
        training["timings_s"] = {k: round(v, 2) for k, v in self.timer.seconds.items()}
        self.log(f"map written to {self.out_path}: {json.dumps(final)}")
        return MappingResult(self.out_path, network, training)

    def _training_record(self, encoder_info: dict[str, Any], budget: Budget, final: dict[str, Any]) -> dict[str, Any]:
        options, state = self.options, self.state
        training = {"mode": options.mode, "network": options.network, "minutes": options.minutes,
                    "end_to_end": options.end_to_end, "device": describe_device(self.device), "source": state.source,
                    "options": options.to_dict()}
        training.update(encoder_info)
        training.update(data=state.data_info, budget_s=dataclasses.asdict(budget),
                        stages={"head": _stage_summary(state.stage_state(Stage.HEAD)),
                                "end_to_end": _stage_summary(state.stage_state(Stage.E2E)),
                                "full": _stage_summary(state.stage_state(Stage.FULL)),
                                "full_end_to_end": _stage_summary(state.stage_state(Stage.FULL_E2E))},
                        validation=final, wall_seconds=round(self.clock.elapsed(), 1),
                        timings_s={k: round(v, 2) for k, v in self.timer.seconds.items()})
        return training


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
