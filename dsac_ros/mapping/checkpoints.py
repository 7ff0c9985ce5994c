"""The checkpoint directory of a mapping run (``MAP.pt.ckpt/``) and the run state it holds.

``RunState`` is what a checkpoint knows of a run besides the buffer: the stage reached (``Stage``),
the options, the budget, the data description, time spent, and each stage's resumable state.
Format version 2 (typed state); a version 1 checkpoint (a plain dict with ``<stage>_state`` keys)
is refused with the reason.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dsac_ros.buffer import PixelBuffer
from dsac_ros.camera import Intrinsics
from dsac_ros.mapping.frames import MappingBuffer
from dsac_ros.mapping.options import MappingError
from dsac_ros.atomic import write_atomically


CHECKPOINT_VERSION = 2


class CheckpointError(MappingError):
    """A checkpoint cannot be resumed (another format version, or damaged); the message says what to do."""


class Stage(str, Enum):
    """Where a mapping run stands; runs move down the list (head and full modes each use their pair)."""

    HEAD = "head"          # memory fill or MLP head training
    E2E = "e2e"            # end-to-end stage on the head
    FULL = "full"          # full mode, stage 1: the whole network
    FULL_E2E = "full_e2e"  # full mode, stage 2: end-to-end
    DONE = "done"


@dataclass
class RunState:
    """What a checkpoint holds about a run (weights live inside ``stage_states``).

    stage_states: each stage's resumable state (``dsac_ros.mapping.stages``), keyed by Stage value;
    encoder: the encoder weights the buffer was made with (head modes), with encoder_info.
    """

    stage: Stage
    options: dict[str, Any]
    budget: dict[str, float]
    data_info: dict[str, Any]
    source: str
    spent_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    stage_states: dict[str, Optional[dict[str, Any]]] = field(default_factory=dict)
    encoder: Optional[dict[str, torch.Tensor]] = None
    encoder_info: Optional[dict[str, Any]] = None

    def stage_state(self, stage: Stage) -> Optional[dict[str, Any]]:
        return self.stage_states.get(stage.value)

    def to_dict(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        payload["stage"] = self.stage.value
        return {"version": CHECKPOINT_VERSION, **payload}

    @classmethod
    def from_dict(cls, payload: dict[str, Any], path: Path) -> "RunState":
        version = payload.get("version") if isinstance(payload, dict) else None
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint {path} has format version {version}, this dsac_ros resumes only "
                                  f"version {CHECKPOINT_VERSION}: map again without --resume (the old checkpoint "
                                  "is then replaced)")
        values = {f.name: payload[f.name] for f in fields(cls) if f.name in payload}
        return cls(**{**values, "stage": Stage(values["stage"])})


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
        write_atomically(path, lambda temporary: torch.save(payload, temporary))

    def save_state(self, state: RunState) -> None:
        self._save(state.to_dict(), self.state_path)

    def load_state(self) -> Optional[RunState]:
        """The saved run state, None without a checkpoint; CheckpointError for another format version."""
        if not self.state_path.exists():
            return None
        return RunState.from_dict(torch.load(self.state_path, map_location="cpu", weights_only=True), self.state_path)

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
