"""Pretraining the scene-agnostic encoder on procedurally rendered rooms (ACE's recipe).

One shared encoder, one small head per training room, all trained together to regress the
ground-truth scene coordinates of random views: the encoder learns features from which a
fresh head can regress coordinates in a room it has never seen, which is what fast mapping
needs. Training rooms are ``random_scene(PRETRAIN_SEED_BASE + i)``; transfer is measured on
rooms from a disjoint seed range, and the standard benchmark scenes are never used.

Resumable: a checkpoint (encoder, heads, optimiser, step, elapsed time) is written every few
minutes, and rendered training data are cached per room.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import torch
from torch import nn

from dsac_ros.atomic import write_atomically
from dsac_ros.camera import Intrinsics
from dsac_ros.encoder_file import ENCODER_FORMAT, ENCODER_FORMAT_VERSION, EncoderFileError, load_encoder, state_digest
from dsac_ros.geometry import invert_pose, transform_points
from dsac_ros.network import (DEFAULT_NETWORK, DEFAULT_NORMALIZATION, OUTPUT_STRIDE, Encoder, Head,
                              network_config)

PRETRAIN_SEED_BASE = 100_000
HELDOUT_SEED_BASE = 900_000


@dataclass
class PretrainConfig:
    encoder: dict = field(default_factory=lambda: network_config(DEFAULT_NETWORK)["encoder"])
    head_width: int = 256
    head_blocks: int = 1
    scenes: int = 64
    views_per_scene: int = 48
    render_size: tuple = (320, 240)  # (width, height) of the cached renders
    crop_size: tuple = (256, 192)  # (width, height) of training crops, multiples of 8
    scale_range: tuple = (0.8, 1.3)  # random rescale before cropping (>= crop / render size)
    images_per_step: int = 8
    encoder_lr: float = 1e-3
    head_lr: float = 3e-3
    warmup_steps: int = 300
    total_steps: int = 60_000  # cosine decay horizon; training may stop earlier and resume
    checkpoint_every_s: float = 300.0
    seed: int = 0
    # "regression" (ACE: per-room heads regress coordinates), "contrastive" (matching cells of
    # overlapping views against all other cells, InfoNCE), or "both" (sum).
    objective: str = "regression"
    temperature: float = 0.07
    # Camera exposure gain drawn per image before the rest of the jitter (light * gain, clipped);
    # (1, 1) = none, the shipped encoder's first 2165 steps. The *_sensor test frames use 0.6-1.4.
    exposure_gain: tuple = (1.0, 1.0)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["render_size"] = list(self.render_size)
        data["crop_size"] = list(self.crop_size)
        data["scale_range"] = list(self.scale_range)
        data["exposure_gain"] = list(self.exposure_gain)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PretrainConfig":
        data = dict(data)
        for key in ("render_size", "crop_size", "scale_range", "exposure_gain"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


# --- training data: rendered rooms, cached ----------------------------------------------------

@dataclass
class RoomData:
    """Rendered views of one room. gray: (V, H, W) uint8; depth_m: (V, H, W) float16;
    world_T_cam: (V, 4, 4) float32; intrinsics of the renders; centre_m: (3,) room centre."""

    gray: np.ndarray
    depth_m: np.ndarray
    world_T_cam: np.ndarray
    intrinsics: Intrinsics
    centre_m: np.ndarray


def render_room(seed: int, views: int, size: tuple[int, int], cache_dir: Optional[Path] = None,
                partners: bool = False) -> RoomData:
    """Render ``views`` random views of ``random_scene(seed)`` at ``size`` (cached as .npz).

    With ``partners``, views ``views .. 2 * views - 1`` are partners of views ``0 .. views - 1``:
    each moved and turned a little (``perturbed_views``), as a test frame is from its nearest
    mapping frame, so every view has a partner it overlaps with at relocalisation reach.
    """
    from dsac_ros.data.render import render
    from dsac_ros.data.scenes import BASE_INTRINSICS, random_scene
    from dsac_ros.data.trajectories import random_views

    intrinsics = BASE_INTRINSICS.resized(*size)
    path = None
    if cache_dir is not None:
        kind = "pairs" if partners else "room"
        path = Path(cache_dir) / f"{kind}_{seed}_{views}_{size[0]}x{size[1]}.npz"
        if path.exists():
            try:
                data = np.load(path)
                return RoomData(data["gray"], data["depth_m"], data["world_T_cam"], intrinsics, data["centre_m"])
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # a cut-off write from an interrupted run: render again
    scene = random_scene(seed)
    poses = random_views(scene, views, seed)
    if partners:
        rng = np.random.default_rng([seed, 0xBEEF])
        partner_poses = perturbed_views(poses, rng, translation_m=0.3, rotation_deg=20.0)
        inside = scene.clearance_m(partner_poses[:, :3, 3]) < 0.1
        partner_poses[inside] = poses[inside]  # never inside geometry: keep the original there
        poses = np.concatenate([poses, partner_poses])
    grays, depths = [], []
    for pose in poses:
        image, depth = render(scene, pose, intrinsics)
        grays.append(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        depths.append(depth.astype(np.float16))
    centre = 0.5 * (np.asarray(scene.room_min_m) + np.asarray(scene.room_max_m))
    room = RoomData(np.stack(grays), np.stack(depths), poses.astype(np.float32), intrinsics, centre.astype(np.float32))
    if path is not None:
        # np.savez appends .npz to a name without it: the temporary name keeps the suffix.
        write_atomically(path, lambda tmp: np.savez(tmp, gray=room.gray, depth_m=room.depth_m,
                                                    world_T_cam=room.world_T_cam, centre_m=room.centre_m),
                         suffix=".tmp.npz")
    return room


def photometric_jitter(gray: np.ndarray, rng: np.random.Generator,
                       exposure_gain: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(H, W) uint8 -> float32 in [0, 1] with random exposure gain (clipped, as a sensor saturates),
    brightness, contrast, gamma and noise. No gain is drawn for the range (1, 1), so older runs
    keep their random stream."""
    image = gray.astype(np.float32) / 255.0
    if tuple(exposure_gain) != (1.0, 1.0):
        image = np.clip(image * rng.uniform(*exposure_gain), 0, 1)
    image = np.clip(image, 0, 1) ** rng.uniform(0.7, 1.4)
    image = (image - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.15, 0.15)
    image = image + rng.normal(0, rng.uniform(0, 0.02), image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


def sample_crop(room: RoomData, view: int, crop_size: tuple[int, int], scale_range: tuple[float, float],
                rng: np.random.Generator, exposure_gain: tuple[float, float] = (1.0, 1.0)
                ) -> tuple[np.ndarray, np.ndarray]:
    """A rescaled, cropped, photometrically jittered view and its cell targets.

    Returns image (h, w) float32 in [0, 1] normalised later, and targets (h/8, w/8, 3) float32
    world coordinates (NaN where depth is invalid).
    """
    height, width = room.gray.shape[1:]
    crop_w, crop_h = crop_size
    min_scale = max(crop_w / width, crop_h / height)
    scale = rng.uniform(max(scale_range[0], min_scale), max(scale_range[1], min_scale))
    new_w, new_h = max(crop_w, int(round(width * scale))), max(crop_h, int(round(height * scale)))
    resized = cv2.resize(room.gray[view], (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x0 = int(rng.integers(0, new_w - crop_w + 1))
    y0 = int(rng.integers(0, new_h - crop_h + 1))
    image = photometric_jitter(resized[y0:y0 + crop_h, x0:x0 + crop_w], rng, exposure_gain)
    # Cell centres of the crop -> pixels of the original render (centres at integer coordinates).
    u = x0 + OUTPUT_STRIDE * np.arange(crop_w // OUTPUT_STRIDE) + OUTPUT_STRIDE / 2
    v = y0 + OUTPUT_STRIDE * np.arange(crop_h // OUTPUT_STRIDE) + OUTPUT_STRIDE / 2
    u = (u + 0.5) * (width / new_w) - 0.5
    v = (v + 0.5) * (height / new_h) - 0.5
    grid_u, grid_v = np.meshgrid(u, v)
    cols = np.clip(np.rint(grid_u).astype(int), 0, width - 1)
    rows = np.clip(np.rint(grid_v).astype(int), 0, height - 1)
    depth = room.depth_m[view][rows, cols].astype(np.float32)
    K = room.intrinsics
    points_cam = np.stack([(grid_u - K.cx_px) / K.fx_px * depth, (grid_v - K.cy_px) / K.fy_px * depth, depth], axis=-1)
    coords = transform_points(room.world_T_cam[view].astype(np.float64), points_cam.reshape(-1, 3)).reshape(points_cam.shape)
    coords[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return image, coords.astype(np.float32)


def _visible_in(room: RoomData, view: int, points_world: np.ndarray, max_depth_ratio: float = 0.05):
    """Which (N, 3) world points ``view`` sees unoccluded, and their (N, 2) pixels there."""
    K = room.intrinsics.K
    height, width = room.depth_m.shape[1:]
    points_cam = transform_points(invert_pose(room.world_T_cam[view].astype(np.float64)), points_world)
    z = points_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = np.stack([K[0, 0] * points_cam[:, 0] / z + K[0, 2], K[1, 1] * points_cam[:, 1] / z + K[1, 2]], 1)
    inside = (z > 0.05) & (pixels[:, 0] >= 0) & (pixels[:, 0] <= width - 1) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= height - 1)
    inside &= np.isfinite(pixels).all(1)
    seen = np.zeros(len(z), dtype=bool)
    cols = np.clip(np.rint(pixels[inside, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.rint(pixels[inside, 1]).astype(int), 0, height - 1)
    surface = room.depth_m[view][rows, cols].astype(np.float64)
    seen[inside] = np.abs(surface - z[inside]) < max_depth_ratio * z[inside]
    return seen, pixels


def contrastive_loss(features_a: torch.Tensor, features_b: torch.Tensor, cells_xy_in_b: torch.Tensor,
                     matched: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over cells: each matched cell of view a against every cell of view b.

    features_a, features_b: (C, h, w); cells_xy_in_b: (h*w, 2) where a's cells land in b, in b's
    cell units (x, y) (cell (i, j) centre = (i, j)); matched: (h*w,) bool. The positive is b's
    feature interpolated at the landing point; b's cells within 1.5 cells of it are not negatives.
    """
    channels, height, width = features_b.shape
    a = nn.functional.normalize(features_a.reshape(channels, -1).T[matched], dim=1)
    b = nn.functional.normalize(features_b.reshape(channels, -1).T, dim=1)
    where = cells_xy_in_b[matched]
    grid = torch.stack([where[:, 0] / max(width - 1, 1), where[:, 1] / max(height - 1, 1)], 1) * 2 - 1
    positive = nn.functional.grid_sample(features_b[None], grid[None, :, None, :], align_corners=True)[0, :, :, 0].T
    positive = nn.functional.normalize(positive, dim=1)
    jj, ii = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    cell_xy = torch.stack([ii.reshape(-1), jj.reshape(-1)], 1).to(where)
    near = torch.cdist(where, cell_xy) < 1.5
    negatives = (a @ b.T).masked_fill(near, float("-inf"))
    logits = torch.cat([(a * positive).sum(1, keepdim=True), negatives], 1) / temperature
    return nn.functional.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long))


def sample_pair(room: RoomData, rng: np.random.Generator, min_matched: int = 16,
                exposure_gain: tuple[float, float] = (1.0, 1.0)):
    """A view and its partner (see ``render_room(partners=True)``), jittered independently, and
    where the view's cells land in the partner (cell units).

    Returns image_a, image_b (H, W) float32 in [0, 1], cells_xy_in_b (h*w, 2) float32 and
    matched (h*w,) bool; None when the pair shares fewer than ``min_matched`` cells.
    """
    views = len(room.gray) // 2
    a = int(rng.integers(views))
    a, b = (a, a + views) if rng.random() < 0.5 else (a + views, a)
    height, width = room.gray.shape[1:]
    cells_w, cells_h = width // OUTPUT_STRIDE, height // OUTPUT_STRIDE
    K = room.intrinsics.K
    u = OUTPUT_STRIDE * np.arange(cells_w) + OUTPUT_STRIDE / 2
    v = OUTPUT_STRIDE * np.arange(cells_h) + OUTPUT_STRIDE / 2
    gu, gv = np.meshgrid(u, v)
    depth = room.depth_m[a][gv.astype(int), gu.astype(int)].astype(np.float64)
    points_cam = np.stack([(gu - K[0, 2]) / K[0, 0] * depth, (gv - K[1, 2]) / K[1, 1] * depth, depth], -1).reshape(-1, 3)
    points_world = transform_points(room.world_T_cam[a].astype(np.float64), points_cam)
    seen, pixels_b = _visible_in(room, b, points_world)
    seen &= depth.reshape(-1) > 0
    if seen.sum() < min_matched:
        return None
    cells_xy = (np.nan_to_num(pixels_b) - OUTPUT_STRIDE / 2) / OUTPUT_STRIDE
    return (photometric_jitter(room.gray[a], rng, exposure_gain), photometric_jitter(room.gray[b], rng, exposure_gain),
            cells_xy.astype(np.float32), seen)


# --- the model being pretrained ----------------------------------------------------------------

class PretrainModel(nn.Module):
    """Shared encoder + one head per training room (heads predict offsets from the room centre)."""

    def __init__(self, config: PretrainConfig, centres_m: np.ndarray) -> None:
        super().__init__()
        enc = config.encoder
        self.encoder = Encoder([int(c) for c in enc["channels"]], int(enc["residual_blocks"]), int(enc["feature_channels"]))
        self.heads = nn.ModuleList(Head(self.encoder.feature_channels, config.head_width, config.head_blocks)
                                   for _ in range(len(centres_m)))
        self.register_buffer("centres_m", torch.as_tensor(np.asarray(centres_m, dtype=np.float32)))

    def forward(self, images: torch.Tensor, rooms: torch.Tensor) -> torch.Tensor:
        """images (B, 1, h, w) normalised; rooms (B,) head indices -> (B, 3, h/8, w/8) world metres."""
        features = self.encoder(images)
        outputs = [self.heads[int(r)](features[i:i + 1]) + self.centres_m[int(r)].view(1, 3, 1, 1)
                   for i, r in enumerate(rooms)]
        return torch.cat(outputs)


def _lr_factor(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.total_steps - config.warmup_steps))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pretrain(out_dir: Path, config: PretrainConfig, hours: float, device: torch.device = torch.device("cpu"),
             data_cache: Optional[Path] = None, log: Callable[[str], None] = print,
             max_steps: Optional[int] = None, init_encoder: Optional[Path] = None) -> Path:
    """Train (or resume) for ``hours`` of wall time; returns the checkpoint path.

    out_dir holds ``checkpoint.pt`` and ``log.jsonl``; an existing checkpoint is resumed with
    the config it was started with. Without one, ``init_encoder`` (an encoder file, e.g. the
    shipped one) continues that encoder's training: its weights, step count and hours carry
    over (the optimiser state starts afresh), so training can go on in another session from
    the committed file alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    state = None
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        config = PretrainConfig.from_dict(state["config"])
        log(f"resuming at step {state['step']} ({state['elapsed_s'] / 3600:.2f} h trained)")
    data_cache = Path(data_cache) if data_cache is not None else out_dir / "rooms"
    seeds = [PRETRAIN_SEED_BASE + i for i in range(config.scenes)]
    rooms = []
    for index, seed in enumerate(seeds):
        rooms.append(render_room(seed, config.views_per_scene, tuple(config.render_size), data_cache,
                                 partners=config.objective in ("contrastive", "both")))
        if index % 8 == 7 or index == len(seeds) - 1:
            log(f"rooms ready: {index + 1}/{len(seeds)}")
    model = PretrainModel(config, np.stack([r.centre_m for r in rooms])).to(device)
    encoder_params = list(model.encoder.parameters())
    head_params = list(model.heads.parameters())
    optimizer = torch.optim.Adam([{"params": encoder_params, "lr": config.encoder_lr, "base_lr": config.encoder_lr},
                                  {"params": head_params, "lr": config.head_lr, "base_lr": config.head_lr}])
    step, elapsed_s = 0, 0.0
    continued_from = state.get("continued_from") if state is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed_s = int(state["step"]), float(state["elapsed_s"])
    elif init_encoder is not None:
        encoder, meta = load_encoder(init_encoder)
        if dict(meta["encoder_config"]) != dict(config.encoder):
            raise EncoderFileError(f"{init_encoder} has encoder {meta['encoder_config']}, this run trains "
                                   f"{config.encoder}")
        model.encoder.load_state_dict(encoder.state_dict())
        step, elapsed_s = int(meta["training"]["steps"]), float(meta["training"]["hours"]) * 3600
        continued_from = dict(meta["training"], weights_sha256=meta["weights_sha256"])
        log(f"continuing {init_encoder} from step {step} ({elapsed_s / 3600:.2f} h trained)")
    rng = np.random.default_rng([config.seed, step])
    mean, std = DEFAULT_NORMALIZATION["mean"], DEFAULT_NORMALIZATION["std"]

    def save() -> None:
        payload = {"config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "step": step, "elapsed_s": elapsed_s, "commit": commit}
        if continued_from is not None:
            payload["continued_from"] = continued_from
        write_atomically(checkpoint_path, lambda tmp: torch.save(payload, tmp), suffix=".tmp")

    # The code that trains from here on: recorded in every checkpoint this session writes.
    commit = _git_commit()
    session_start = time.monotonic()
    last_save = session_start
    running = None
    with open(out_dir / "log.jsonl", "a") as log_file:
        while time.monotonic() - session_start < hours * 3600 and (max_steps is None or step < max_steps):
            tick = time.monotonic()
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(step, config)
            loss = torch.zeros(())
            median_cm = float("nan")
            if config.objective in ("regression", "both"):
                room_ids = rng.choice(len(rooms), size=min(config.images_per_step, len(rooms)), replace=False)
                images, targets = [], []
                for room_id in room_ids:
                    room = rooms[room_id]
                    image, coords = sample_crop(room, int(rng.integers(len(room.gray))), tuple(config.crop_size),
                                                tuple(config.scale_range), rng, tuple(config.exposure_gain))
                    images.append(image)
                    targets.append(coords)
                images_t = ((torch.from_numpy(np.stack(images)) - mean) / std)[:, None].to(device)
                targets_t = torch.from_numpy(np.stack(targets)).permute(0, 3, 1, 2).to(device)
                pred = model(images_t, torch.as_tensor(room_ids))
                valid = torch.isfinite(targets_t).all(dim=1)
                error_m = (pred - torch.nan_to_num(targets_t)).norm(dim=1)[valid]
                # Robust beyond 1 m so early, wild predictions do not dominate the encoder's gradient.
                loss = loss + torch.where(error_m < 1.0, error_m, torch.sqrt(error_m)).mean()
                median_cm = float(error_m.detach().median()) * 100
            if config.objective in ("contrastive", "both"):
                pair_losses = []
                for room_id in rng.choice(len(rooms), size=min(max(1, config.images_per_step // 2), len(rooms)),
                                         replace=False):
                    pair = sample_pair(rooms[room_id], rng, exposure_gain=tuple(config.exposure_gain))
                    if pair is None:
                        continue
                    image_a, image_b, cells_xy, matched = pair
                    images_t = ((torch.from_numpy(np.stack([image_a, image_b])) - mean) / std)[:, None].to(device)
                    features = model.encoder(images_t)
                    pair_losses.append(contrastive_loss(features[0], features[1], torch.from_numpy(cells_xy).to(device),
                                                        torch.from_numpy(matched).to(device), config.temperature))
                if pair_losses:
                    loss = loss + torch.stack(pair_losses).mean()
            if not loss.requires_grad:
                continue  # no usable pair this round
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            elapsed_s += time.monotonic() - tick
            value = float(loss.detach())
            running = value if running is None else 0.98 * running + 0.02 * value
            if step % 100 == 0:
                record = {"step": step, "loss": round(running, 4), "median_error_cm": round(median_cm, 1),
                          "hours": round(elapsed_s / 3600, 3), "lr": optimizer.param_groups[0]["lr"]}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log(f"step {step}: loss {running:.3f}, median cell error {median_cm:.1f} cm, "
                    f"{elapsed_s / 3600:.2f} h")
            if time.monotonic() - last_save > config.checkpoint_every_s:
                save()
                last_save = time.monotonic()
    save()
    return checkpoint_path


# --- the shipped encoder file --------------------------------------------------------------------

def export_encoder(checkpoint_path: Path, out_path: Path, command: str = "") -> dict:
    """Write the encoder of a pretraining checkpoint as a small self-describing file.

    The file records its training configuration, steps, hours, the commit that made it, the
    reproducing command and a SHA-256 of the weights (checked on load).
    """
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    prefix = "encoder."
    weights = {k[len(prefix):]: v.to(torch.float32) for k, v in state["model"].items() if k.startswith(prefix)}
    config = PretrainConfig.from_dict(state["config"])
    payload = {
        "format": ENCODER_FORMAT, "format_version": ENCODER_FORMAT_VERSION,
        "encoder_config": dict(config.encoder), "normalization": dict(DEFAULT_NORMALIZATION),
        "state_dict": weights, "weights_sha256": state_digest(weights),
        "training": {"config": config.to_dict(), "steps": int(state["step"]),
                     "hours": round(float(state["elapsed_s"]) / 3600, 3),
                     "commit": state.get("commit", "unknown"), "command": command,
                     "torch": str(torch.__version__),
                     # The earlier run(s) this one continued (their command, commit, steps).
                     "continued_from": state.get("continued_from")},
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out_path)
    return {k: v for k, v in payload.items() if k != "state_dict"}


# --- test views near mapping views (training partners here, transfer tests in benchmarks/) ---------

def perturbed_views(world_T_cam: np.ndarray, rng: np.random.Generator, translation_m: float = 0.15,
                    rotation_deg: float = 7.0) -> np.ndarray:
    """(V, 4, 4) poses moved by about ``translation_m`` and turned by about ``rotation_deg``:
    test views near mapping views, as 7-Scenes' test sequences are."""
    from dsac_ros.geometry import rotation_from_axis_angle

    out = np.array(world_T_cam, dtype=np.float64, copy=True)
    for pose in out:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        pose[:3, :3] = pose[:3, :3] @ rotation_from_axis_angle(axis * np.radians(rotation_deg) * rng.uniform(0.5, 1.0))
        direction = rng.normal(size=3)
        pose[:3, 3] += direction / np.linalg.norm(direction) * translation_m * rng.uniform(0.5, 1.0)
    return out
