"""The checkpoint directory of a mapping run (``MAP.pt.ckpt/``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dsac_ros.buffer import PixelBuffer
from dsac_ros.camera import Intrinsics
from dsac_ros.mapping.frames import MappingBuffer


CHECKPOINT_VERSION = 1


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
