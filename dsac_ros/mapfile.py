"""Self-describing map files: one ``.pt`` dict with everything needed to relocalise in a scene.

Layout (plain types and tensors only, so ``torch.load(..., weights_only=True)`` reads it):

    format            "dsac_ros.map"
    format_version    int (MAP_FORMAT_VERSION); files from a newer dsac_ros are refused
    network_config    dict (see dsac_ros.network.NETWORK_CONFIGS): rebuilds the architecture
    state_dict        {name: tensor}: encoder.* and head.* weights
    scene_center_m    [x, y, z] floats: added to the head's output
    input_height_px   int: the image height the network was trained at (multiple of 8)
    normalization     {"color": "gray", "mean": float, "std": float}
    training          dict of plain metadata (mode, minutes, frames, source, encoder id, ...)
    versions          {"dsac_ros", "torch", "numpy"} that wrote the file
    created_utc       ISO 8601 time of writing

Format versions: 1 stored a memory head densely (float16 keys and float32 coordinates of every
cell of every mapping frame). 2 adds the compact memory (``dsac_ros.compact_memory``): keyframe
cells with product-quantised keys, and coordinates as int16 steps (``head.coords_q`` and
``head.coords_step_m`` in place of ``head.values``). Version 1 files still load as they are.
"""

from __future__ import annotations

import datetime
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dsac_ros
from dsac_ros.atomic import write_atomically
from dsac_ros.compact_memory import pack_state, unpack_state
from dsac_ros.network import (DEFAULT_INPUT_HEIGHT_PX, DEFAULT_NORMALIZATION, OUTPUT_STRIDE,
                              SceneCoordinateNetwork, build_network, is_compact_head, network_config)

MAP_FORMAT = "dsac_ros.map"
MAP_FORMAT_VERSION = 2
REQUIRED_KEYS = ("format", "format_version", "network_config", "state_dict", "scene_center_m",
                 "input_height_px", "normalization")


class MapFileError(ValueError):
    """A map file cannot be used; the message names the file and the problem."""


@dataclass
class SceneMap:
    """A loaded map: the network (on the CPU, eval mode) and its description."""

    network: SceneCoordinateNetwork
    input_height_px: int
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = MAP_FORMAT_VERSION
    created_utc: str = ""
    path: str = ""

    @property
    def scene_center_m(self) -> np.ndarray:
        return self.network.scene_center_m.detach().cpu().numpy().reshape(3).astype(np.float64)

    @property
    def network_config(self) -> dict[str, Any]:
        return dict(self.network.config or {})


def current_versions() -> dict[str, str]:
    # str(): torch.__version__ is a TorchVersion object, which a weights_only load refuses.
    return {"dsac_ros": str(dsac_ros.__version__), "torch": str(torch.__version__), "numpy": str(np.__version__)}


def _plain(value: Any, where: str) -> Any:
    """Metadata converted to the types weights_only loading accepts (numbers, str, lists, dicts)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"map metadata {where} has unsupported type {type(value).__name__}")


def map_to_dict(network: SceneCoordinateNetwork, input_height_px: int = DEFAULT_INPUT_HEIGHT_PX,
                normalization: dict[str, Any] | None = None, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict ``save_map`` writes (also useful for checkpoints that embed a map)."""
    if network.config is None:
        raise ValueError("network has no config; build it with dsac_ros.network.build_network")
    if input_height_px <= 0 or input_height_px % OUTPUT_STRIDE:
        raise ValueError(f"input_height_px must be a positive multiple of {OUTPUT_STRIDE}, got {input_height_px}")
    state_dict = {name: tensor.detach().cpu().clone() for name, tensor in network.state_dict().items()}
    if is_compact_head(network.config["head"]):
        state_dict = pack_state(state_dict)
        # Float16 where that loses nothing: mapping rounds the encoder for compact maps (1.6 MB saved).
        state_dict = {name: tensor.half() if name.startswith("encoder.") and tensor.is_floating_point()
                      and torch.equal(tensor.half().float(), tensor) else tensor
                      for name, tensor in state_dict.items()}
    return {
        "format": MAP_FORMAT,
        "format_version": MAP_FORMAT_VERSION,
        "network_config": _plain(network.config, "network_config"),
        "state_dict": state_dict,
        "scene_center_m": [float(v) for v in network.scene_center_m.detach().cpu().reshape(3)],
        "input_height_px": int(input_height_px),
        "normalization": _plain(dict(normalization or DEFAULT_NORMALIZATION), "normalization"),
        "training": _plain(dict(training or {}), "training"),
        "versions": current_versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_map(path: str | os.PathLike, network: SceneCoordinateNetwork,
             input_height_px: int = DEFAULT_INPUT_HEIGHT_PX, normalization: dict[str, Any] | None = None,
             training: dict[str, Any] | None = None) -> Path:
    """Write a map file atomically (temporary file + rename: a crash never leaves half a map)."""
    payload = map_to_dict(network, input_height_px, normalization, training)
    return write_atomically(path, lambda temporary: torch.save(payload, temporary))


def _read_payload(path: Path) -> Any:
    if not path.exists():
        raise MapFileError(f"map file {path}: does not exist")
    if not path.is_file():
        raise MapFileError(f"map file {path}: not a file")
    data = path.read_bytes()
    if len(data) == 0:
        raise MapFileError(f"map file {path}: empty (0 bytes)")
    if not data.startswith(b"PK\x03\x04"):
        raise MapFileError(f"map file {path}: not a PyTorch file (no zip header); not a dsac_ros map")
    # torch.save writes a zip archive; its central directory sits at the very end of the file,
    # so a missing or unreadable directory means the file was cut short (interrupted copy).
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad_member = archive.testzip()
    except zipfile.BadZipFile as error:
        raise MapFileError(f"map file {path}: truncated or incomplete ({len(data)} bytes; {error})") from error
    if bad_member is not None:
        raise MapFileError(f"map file {path}: corrupt (checksum error in {bad_member})")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = next((line.split(":", 1)[1].strip() for line in str(error).splitlines()
                       if "WeightsUnpickler error" in line), str(error).strip()[:200])
        raise MapFileError(f"map file {path}: holds objects a safe (weights_only) load refuses; "
                           f"not a dsac_ros map ({detail})") from error
    except Exception as error:  # torch raises RuntimeError/EOFError/... for damaged archives
        raise MapFileError(f"map file {path}: corrupt ({type(error).__name__}: {error})") from error


def map_from_dict(payload: Any, source: str = "<dict>") -> SceneMap:
    """Validate a loaded map dict and rebuild its network (CPU, eval mode)."""
    if not isinstance(payload, dict):
        raise MapFileError(f"map file {source}: wrong format (holds a {type(payload).__name__}, not a map dict)")
    if payload.get("format") != MAP_FORMAT:
        raise MapFileError(f"map file {source}: wrong format {payload.get('format')!r} (expected {MAP_FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if "format_version" in missing:
        raise MapFileError(f"map file {source}: missing keys {', '.join(missing)}")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MapFileError(f"map file {source}: format_version {version!r} is not an integer")
    if version > MAP_FORMAT_VERSION:
        versions = payload.get("versions")
        writer = versions.get("dsac_ros", "unknown") if isinstance(versions, dict) else "unknown"
        raise MapFileError(f"map file {source}: format version {version} is newer than this dsac_ros "
                           f"({dsac_ros.__version__}) reads (<= {MAP_FORMAT_VERSION}); written by dsac_ros "
                           f"{writer}: upgrade dsac_ros")
    if version < 1:
        raise MapFileError(f"map file {source}: invalid format version {version}")
    if missing:
        raise MapFileError(f"map file {source}: missing keys {', '.join(missing)}")
    try:
        config = network_config(payload["network_config"])
    except ValueError as error:
        raise MapFileError(f"map file {source}: bad network_config ({error})") from error
    center = np.asarray(payload["scene_center_m"], dtype=np.float64).reshape(-1)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise MapFileError(f"map file {source}: scene_center_m must be 3 finite numbers, "
                           f"got {payload['scene_center_m']!r}")
    input_height_px = payload["input_height_px"]
    if not isinstance(input_height_px, int) or input_height_px <= 0 or input_height_px % OUTPUT_STRIDE:
        raise MapFileError(f"map file {source}: input_height_px must be a positive multiple of "
                           f"{OUTPUT_STRIDE}, got {input_height_px!r}")
    normalization = payload["normalization"]
    if (not isinstance(normalization, dict) or not all(k in normalization for k in ("mean", "std"))
            or not float(normalization["std"]) > 0):
        raise MapFileError(f"map file {source}: normalization needs mean and a positive std, got {normalization!r}")
    state_dict = payload["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise MapFileError(f"map file {source}: state_dict is not a dict of tensors")
    if is_compact_head(config["head"]):
        state_dict, problems = unpack_state(state_dict)
        if problems:
            raise MapFileError(f"map file {source}: corrupt compact memory ({'; '.join(problems)})")
    try:
        network = build_network(config, center)
    except ValueError as error:
        raise MapFileError(f"map file {source}: bad network_config ({error})") from error
    expected = network.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in expected]
    problems += [f"{k}: shape {tuple(state_dict[k].shape)} != {tuple(v.shape)} of the configured network"
                 for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise MapFileError(f"map file {source}: weights do not match its network_config ({shown})")
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise MapFileError(f"map file {source}: non-finite weights in {', '.join(bad[:4])}")
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()})
    network.eval()
    return SceneMap(
        network=network,
        input_height_px=int(input_height_px),
        normalization=dict(normalization),
        training=dict(payload.get("training") or {}),
        versions=dict(payload.get("versions") or {}),
        format_version=int(version),
        created_utc=str(payload.get("created_utc", "")),
        path=source,
    )


def load_map(path: str | os.PathLike) -> SceneMap:
    """Read and validate a map file. Raises MapFileError naming the problem:
    missing / not a file / empty / not a PyTorch file / truncated / corrupt / wrong format /
    newer version / missing keys / weights not matching the recorded architecture."""
    path = Path(path)
    return map_from_dict(_read_payload(path), str(path))


def map_size_report(path: str | os.PathLike) -> dict[str, Any]:
    """What a map file's bytes are: {"file_mb", "parts": {part: MB}, "dominant": part}.

    Parts group the stored tensors: encoder weights, memory keys (codes or float16 keys),
    coordinates, frame descriptors and index, codebooks, and the rest (MLP head, metadata)."""
    path = Path(path)
    payload = _read_payload(path)
    parts: dict[str, float] = {}
    names = {"keys": "keys", "codes": "keys", "values": "coordinates", "coords_q": "coordinates",
             "coords_step_m": "coordinates", "descriptors": "frame descriptors", "frame_start": "frame descriptors",
             "valid": "keys", "codebooks": "codebooks"}
    for name, tensor in payload.get("state_dict", {}).items():
        part = "encoder" if name.startswith("encoder.") else names.get(name.split(".")[-1], "head") \
            if name.startswith("head.") else "other"
        parts[part] = parts.get(part, 0.0) + tensor.numel() * tensor.element_size() / 1e6
    file_mb = path.stat().st_size / 1e6
    parts["metadata and container"] = max(0.0, file_mb - sum(parts.values()))
    dominant = max(parts, key=parts.get)
    return {"file_mb": file_mb, "parts": parts, "dominant": dominant}
