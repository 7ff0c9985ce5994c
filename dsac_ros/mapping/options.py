"""What shapes a mapping run: ``MappingOptions``, its errors, and the split of the time budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from dsac_ros.dsac import RansacOptions
from dsac_ros.head_training import HeadTrainingOptions
from dsac_ros.mapping.keyframes import KeyframeOptions

from dsac_ros.network import (DEFAULT_INPUT_HEIGHT_PX, MEMORY_INPUT_HEIGHT_PX, DEFAULT_NORMALIZATION, OUTPUT_STRIDE, is_memory_head,
                              network_config)


MODES = ("rgbd", "rgb", "full")
INPUT_NORMALIZATIONS = ("auto", "fixed", "per_image", "per_image_gain")


class MappingError(ValueError):
    """Mapping cannot run on this data or with these options; the message says why."""


@dataclass
class AugmentationOptions:
    """Buffer views: pass 0 is the plain view, passes 1.. random views (DSAC*'s ranges for scale and
    photometry; a smaller rotation, as hand-held sequences roll little). passes None: as many whole
    passes as fit in ``BudgetOptions.buffer_fraction`` of the budget (measured on pass 0), between
    2 and ``max_passes``."""

    passes: Optional[int] = None
    max_passes: int = 6
    scale_range: tuple[float, float] = (2.0 / 3.0, 1.5)
    max_rotation_deg: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.1

    def __post_init__(self) -> None:
        if self.passes is not None and self.passes < 1:
            raise MappingError("augmentation passes must be at least 1 (the plain view)")
        self.scale_range = tuple(float(v) for v in self.scale_range)


@dataclass
class BudgetOptions:
    """How the wall-clock budget (``MappingOptions.minutes``) is shared (see ``split_budget``)."""

    buffer_fraction: float = 0.3  # augmentation passes are added while buffering stays within this
    head_fraction: float = 0.8  # of what is left: the first stage; the rest to the end-to-end stage
    reserve_fraction: float = 0.03  # final validation and saving (at least 2 s)

    def __post_init__(self) -> None:
        if not 0.0 < self.head_fraction <= 1.0:
            raise MappingError(f"head_fraction must be in (0, 1], got {self.head_fraction}")


TRIANGULATIONS = ("sweep", "matches")


@dataclass
class MemoryOptions:
    """What a memory map keeps (map format 2). keyframes: which mapping frames join the memory
    (``dsac_ros.mapping.keyframes``); subquantizers: bytes per product-quantised key
    (``dsac_ros.compact_memory``), None for the dense float16 keys of format 1 (every cell of
    every kept frame, 256 bytes a key); encoder_float16: store the encoder's weights as float16 in
    the map (mapping encodes with the same rounded weights, so keys and queries agree).

    Measured on small_room (150 test frames, within 5 cm / 5 deg), rgbd: every frame with dense keys
    81.3 % (92 MB of keys and coordinates); 16-byte keys 80.7 %; 8-byte keys 80.0 %; keyframes at
    5 % novelty and 5 deg with 16-byte keys 80.0 % from 176 of 285 frames (4.6 MB); at 7.5 deg
    77.3 % from 116 frames. rgb: dense 68.7 %, 16-byte keys 68.7 %, keyframes at 5 deg 63.3 %,
    at 3 deg 70.0 % (232 frames).
    """

    keyframes: KeyframeOptions = field(default_factory=KeyframeOptions)
    subquantizers: Optional[int] = 16
    encoder_float16: bool = True
    # rgb mode: how cells get coordinates. sweep: a plane sweep of each cell's ray through its
    # partners' feature grids (``dsac_ros.sweep``); matches: mutual nearest-key matches between
    # frames, triangulated (``memory_head.triangulate_memory``). small_room rgb, within 5 cm / 5 deg
    # (150 test frames): sweep 93.3 %, mapped in 26 s; matches 91.3 %, 44 s.
    triangulation: str = "sweep"
    # Keys kept on every key_stride-th cell of each axis (1: every cell). A query then searches
    # with the same sub-grid of its cells and finds each match's position on its full grid
    # (``dsac_ros.subcell.fine_positions``): a finer grid's precision at the coarse grid's cost.
    # None: 2 for memory maps at 480 px and above (MappingOptions decides), else 1.
    key_stride: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.keyframes, dict):  # from a checkpoint's or map's plain record
            names = {f.name for f in dataclasses.fields(KeyframeOptions)}
            self.keyframes = KeyframeOptions(**{k: v for k, v in self.keyframes.items() if k in names})
        if self.triangulation not in TRIANGULATIONS:
            raise MappingError(f"triangulation must be one of {', '.join(TRIANGULATIONS)}, got {self.triangulation!r}")
        if self.key_stride is not None and int(self.key_stride) < 1:
            raise MappingError(f"key_stride must be at least 1, got {self.key_stride}")
        if self.subquantizers is not None and self.subquantizers < 1:
            raise MappingError(f"subquantizers must be at least 1 (or None for dense keys), got {self.subquantizers}")

    @property
    def compact(self) -> bool:
        return self.subquantizers is not None


def default_e2e_ransac() -> RansacOptions:
    # An end-to-end step costs about 1.6 s on this CPU with 1200 cells and up to 100 refinement
    # iterations per hypothesis, 0.5 s with 600 cells and 10 iterations (DSAC 2017 refined 8 times).
    return RansacOptions(hypotheses=64, max_refinement_iterations=10)


@dataclass
class MappingOptions:
    """Everything that shapes a mapping run, composed of the options of its parts. Times in
    seconds unless named otherwise.

    head: the MLP head's schedule and losses (``HeadTrainingOptions``; its ``loss`` is chosen per
    mode); e2e_ransac: DSAC inside the end-to-end stages; augmentation: the buffer's views;
    budget: the split of ``minutes``.
    """

    mode: str = "rgbd"
    minutes: float = 10.0
    # The end-to-end DSAC stage. None: on for MLP heads and full mode; off for memory maps, whose
    # coordinates are depth samples or triangulated points: on the real 7-Scenes split it moved
    # accuracy by -1.5..+1.5 points for 85 % of the mapping time (docs/real_data.md).
    end_to_end: Optional[bool] = None
    device: str = "auto"
    # Encoder file (dsac_ros.encoder_file.load_encoder) or a NAMED_ENCODERS name; None = the shipped
    # one; "auto": the lean encoder for memory maps at 480 px and above (a quarter of the shipped
    # encoder's cost, as accurate there on real images), else the shipped one. ``full`` mode uses
    # it only when given explicitly.
    encoder_path: Optional[str] = "auto"
    # Head architecture (and, in full mode, the whole network) from dsac_ros.network.NETWORK_CONFIGS;
    # None: "memory" (scene memory head, dsac_ros.memory_head) for rgbd / rgb, "full" in full mode.
    # "fast" / "ace" train an MLP head instead (10 minutes reach about 40 cm on small_room).
    network: Optional[str] = None
    # Network input height. None: MEMORY_INPUT_HEIGHT_PX (480) for memory maps, whose keys then lie on
    # every 2nd cell (``MemoryOptions.key_stride``); DEFAULT_INPUT_HEIGHT_PX (240) otherwise. On the
    # real 7-Scenes split, RGB queries: 240 px 87.0 / 31.5 / 6.5 % within 5 / 2 / 1 cm; 480 px with
    # strided keys in bench/results/real.json.
    input_height_px: Optional[int] = None
    # Network input: "fixed" (one mean and std for every image), "per_image_gain" (each image
    # scaled to the fixed mean first: one gain per image cancels a camera's exposure change,
    # contrast is kept), "per_image" (each image standardised by its own mean and std), or "auto":
    # per_image_gain for scene-memory maps, fixed for MLP heads and full mode (not measured there).
    # The map stores it, so localisation does the same. bench cameras, % within 5 cm / 5 deg, memory
    # maps, session 9: small_room rgb clean / *_sensor: fixed 93.3 / 74.7, per_image 82.7 / 83.3,
    # per_image_gain 92.0 / 92.0; rgb queries on a small_room rgbd map: fixed 92.7, per_image 81.3,
    # per_image_gain 92.7 (README's camera table has large_room and the rest).
    input_normalization: str = "auto"
    frame_stride: int = 1
    # Memory head: mapping frames retrieved per image, whose cells are searched for each cell.
    retrieve_frames: int = 8
    # Validation: every ``validation_every``-th frame is held back (at most max_validation_frames).
    validation_every: int = 20
    max_validation_frames: int = 20
    augmentation: AugmentationOptions = field(default_factory=AugmentationOptions)
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    budget: BudgetOptions = field(default_factory=BudgetOptions)
    head: HeadTrainingOptions = field(default_factory=HeadTrainingOptions)
    batch_size: int = 4096
    e2e_lr: float = 1e-4
    e2e_ransac: RansacOptions = field(default_factory=default_e2e_ransac)
    e2e_max_cells: int = 600  # cells of a view per end-to-end step (random subset if more)
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
        if self.input_normalization not in INPUT_NORMALIZATIONS:
            raise MappingError(f"input_normalization must be one of {', '.join(INPUT_NORMALIZATIONS)}, "
                               f"got {self.input_normalization!r}")
        if self.frame_stride < 1 or self.validation_every < 2:
            raise MappingError("frame_stride must be >= 1 and validation_every >= 2")
        if self.network is None:
            self.network = "full" if self.mode == "full" else "memory"
        # Unknown names fail here, before any data is read.
        if self.mode == "full" and is_memory_head(network_config(self.network)["head"]):
            raise MappingError("full mode trains a network end to end; a memory head has nothing to train "
                               "there: use --mode rgbd or rgb with --network memory")
        # Defaults that depend on the head (None / "auto"): see the fields' comments.
        memory = is_memory_head(network_config(self.network)["head"])
        if self.input_height_px is None:
            self.input_height_px = MEMORY_INPUT_HEIGHT_PX if memory else DEFAULT_INPUT_HEIGHT_PX
        if self.input_height_px <= 0 or self.input_height_px % OUTPUT_STRIDE:
            raise MappingError(f"input height must be a positive multiple of {OUTPUT_STRIDE}")
        fine = memory and self.input_height_px >= MEMORY_INPUT_HEIGHT_PX
        if self.encoder_path == "auto":
            self.encoder_path = "lean" if fine else None
        if self.end_to_end is None:
            self.end_to_end = not memory
        if isinstance(self.memory, MemoryOptions) and self.memory.key_stride is None:
            self.memory = dataclasses.replace(self.memory, key_stride=2 if fine else 1)

    @property
    def resolved_input_normalization(self) -> str:
        """``input_normalization`` with "auto" decided by the head: "per_image_gain" or "fixed"."""
        if self.input_normalization == "auto":
            return "per_image_gain" if is_memory_head(network_config(self.network)["head"]) else "fixed"
        return self.input_normalization

    @property
    def normalization(self) -> dict[str, Any]:
        """The network input normalisation the map is made with and stores (``normalize_unit_gray``)."""
        normalization = dict(DEFAULT_NORMALIZATION)
        if self.resolved_input_normalization in ("per_image", "per_image_gain"):
            normalization[self.resolved_input_normalization] = True
        return normalization

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), for the map's training record and checkpoints."""
        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(value) if isinstance(value, tuple) else value
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> "MappingOptions":
        """Inverse of ``to_dict`` (unknown keys ignored), with ``overrides`` applied on top."""
        parts = {"augmentation": AugmentationOptions, "budget": BudgetOptions, "head": HeadTrainingOptions,
                 "e2e_ransac": RansacOptions, "memory": MemoryOptions}
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                continue
            if key in parts and isinstance(value, dict):
                names = {f.name for f in dataclasses.fields(parts[key])}
                value = parts[key](**{k: v for k, v in value.items() if k in names})
            kwargs[key] = value
        return cls(**(kwargs | overrides))


def default_of(options_class: type, name: str) -> Any:
    """The default of a dataclass field: argparse defaults are read from the options, never restated."""
    field_ = next(f for f in dataclasses.fields(options_class) if f.name == name)
    return field_.default_factory() if field_.default_factory is not dataclasses.MISSING else field_.default


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
    reserve = max(2.0, options.budget.reserve_fraction * total_s)
    remaining = max(0.0, total_s - spent_s - reserve)
    if uses_memory_head(options):
        return Budget(total_s, 0.0, remaining * (1.0 - options.budget.head_fraction) if options.end_to_end else 0.0, reserve)
    head = remaining * (options.budget.head_fraction if options.end_to_end else 1.0)
    return Budget(total_s, head, remaining - head, reserve)
