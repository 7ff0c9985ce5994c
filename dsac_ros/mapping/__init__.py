"""Mapping: frames with poses -> a scene coordinate network -> a map file (``map_recording``).

One responsibility per module, arrows pointing down the list:

    run          ``map_recording`` / ``MappingRun``: the pipeline, budget clock, stage order, training record
    stages       head training, memory fill, end-to-end stage, full-network stages (resumable)
    validation   pose errors of held-out mapping frames
    checkpoints  the ``MAP.pt.ckpt/`` directory: buffer and typed run state (``RunState``, ``Stage``)
    frames       reading a recording into mapping / validation sets, the encoded buffer
    views        plain and augmented network inputs with exact pixel bookkeeping
    clock        where mapping time goes, the budget clock, and the progress display
    options      ``MappingOptions``, ``MappingError``, the budget split

The encoder a run uses comes from ``dsac_ros.encoder_file``.
"""

from dsac_ros.encoder_file import DEFAULT_ENCODER_PATH, calibrate_random_encoder, load_mapping_encoder
from dsac_ros.mapping.checkpoints import CHECKPOINT_VERSION, CheckpointError, Checkpoints, RunState, Stage
from dsac_ros.mapping.clock import BudgetClock, Progress, StageTimer
from dsac_ros.mapping.frames import FrameRecordSet, MappingBuffer, build_buffer, scene_center, split_frames
from dsac_ros.mapping.keyframes import KeyframeOptions, KeyframeSelector
from dsac_ros.mapping.options import (MODES, AugmentationOptions, Budget, BudgetOptions, MappingError, MappingOptions,
                                      MemoryOptions, split_budget, uses_memory_head)
from dsac_ros.mapping.run import MappingResult, MappingRun, map_recording
from dsac_ros.mapping.stages import (EpochSampler, StageContext, end_to_end_stage, end_to_end_step, fill_memory,
                                     full_training_stage, train_head_stage, view_expected_loss, view_rows)
from dsac_ros.mapping.validation import summarize_records, validate_head, validate_network
from dsac_ros.mapping.views import AugmentedView, augmentation_affine, make_view, view_cell_pixels

__all__ = ["AugmentationOptions", "AugmentedView", "Budget", "BudgetOptions", "BudgetClock", "CHECKPOINT_VERSION", "CheckpointError", "Checkpoints", "DEFAULT_ENCODER_PATH", "EpochSampler",
           "FrameRecordSet", "KeyframeOptions", "KeyframeSelector", "MODES", "MemoryOptions", "MappingBuffer", "MappingError", "MappingOptions", "MappingResult", "MappingRun", "Progress", "RunState", "Stage",
           "StageContext", "StageTimer", "augmentation_affine", "build_buffer", "calibrate_random_encoder",
           "end_to_end_stage", "end_to_end_step", "fill_memory", "full_training_stage", "load_mapping_encoder",
           "make_view", "map_recording", "scene_center", "split_budget", "split_frames", "summarize_records",
           "train_head_stage", "uses_memory_head", "validate_head", "validate_network", "view_cell_pixels",
           "view_expected_loss", "view_rows"]
