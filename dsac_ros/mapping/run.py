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

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from dsac_ros.device import describe_device, resolve_device
from dsac_ros.encoder_file import calibrate_random_encoder, load_mapping_encoder
from dsac_ros.mapping.checkpoints import CHECKPOINT_VERSION, Checkpoints
from dsac_ros.mapping.clock import Progress, StageTimer
from dsac_ros.mapping.frames import build_buffer, frames_source, scene_center, split_frames
from dsac_ros.mapping.options import Budget, MappingError, MappingOptions, split_budget, uses_memory_head
from dsac_ros.mapping.stages import StageContext, end_to_end_stage, fill_memory, full_training_stage, train_head_stage
from dsac_ros.mapping.validation import format_validation, validate_head, validate_network
from dsac_ros.mapping.views import make_view
from dsac_ros.network import DEFAULT_NORMALIZATION, build_head, SceneCoordinateNetwork, network_config

logger = logging.getLogger(__name__)


@dataclass
class MappingResult:
    """What ``map_recording`` produced: the map path, the network, and the run's record."""

    path: Path
    network: SceneCoordinateNetwork
    training: dict[str, Any]


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
        frames, count, source = frames_source(data, recording_options)
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
    progress.update(validation=format_validation(final))
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

    frames, count, source = frames_source(data, recording_options)
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
