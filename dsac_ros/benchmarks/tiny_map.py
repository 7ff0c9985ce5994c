"""The cached map of the tiny scene shared by the localizer and node tests and bench/bench_node.py.

A short coordinate-regression run on a few mapping frames of the tiny scene, saved with the real
map-file code; cached under the test cache directory so every suite trains it once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import transform_points
from dsac_ros.mapfile import save_map
from dsac_ros.network import backproject_depth_at, build_network, prepare_input

REPO_ROOT = Path(__file__).resolve().parents[2]

# The fitted map memorises a few mapping frames of the tiny scene (160 x 120): enough for DSAC to
# find their poses, which is what these tests need. Bump FIT_VERSION when the fit changes.
FIT_VERSION = 2
FIT_STRIDE = 6  # mapping frames 0, 6, 12, 18
FIT_STEPS = 600
# A small custom architecture (stored in the map like any other): about 12 s of CPU to fit.
FIT_NETWORK = {"name": "test-small", "encoder": {"channels": [8, 16, 32, 64], "residual_blocks": 1,
                                                 "feature_channels": 64},
               "head": {"width": 64, "residual_blocks": 1}}
INPUT_HEIGHT_PX = 120


def fit_tiny_map(path):
    # One thread: on 2 cores shared with other work, two threads spin-wait on each other
    # (measured 0.07 s of CPU per step with one thread, 1.8 s with two under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit_tiny_map(path)
    finally:
        torch.set_num_threads(threads)


def _fit_tiny_map(path, seed=0):
    torch.manual_seed(seed)
    scene = get_scene("tiny")
    frames = list(scene.render_frames("mapping", stride=FIT_STRIDE))
    images, targets, valids = [], [], []
    for frame in frames:
        prepared = prepare_input(frame.image_rgb, INPUT_HEIGHT_PX)
        points_cam, valid = backproject_depth_at(frame.depth_m, frame.intrinsics, prepared.cell_centers_px())
        images.append(prepared.tensor)
        targets.append(transform_points(frame.world_T_cam, points_cam))
        valids.append(valid)
    cells_w, cells_h = prepared.cells_size
    images = torch.cat(images)
    target = torch.tensor(np.stack(targets), dtype=torch.float32)
    target = target.reshape(len(frames), cells_h, cells_w, 3).permute(0, 3, 1, 2)  # (B, 3, h, w)
    valid = torch.tensor(np.stack(valids)).reshape(len(frames), cells_h, cells_w).float()
    centre = np.concatenate(targets)[np.concatenate(valids)].mean(axis=0)
    network = build_network(FIT_NETWORK, centre)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=FIT_STEPS, pct_start=0.05,
                                                   div_factor=2)
    for _ in range(FIT_STEPS):
        error_m = (network(images) - target).norm(dim=1)
        loss = (error_m * valid).sum() / valid.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    save_map(path, network.eval(), INPUT_HEIGHT_PX,
             training={"mode": "test-fit", "scene": "tiny", "frames": len(frames), "steps": FIT_STEPS,
                       "final_loss_m": loss.item()})


def build_tiny_map(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the cached tiny-scene map, fitting it first if needed (about a minute on 2 cores)."""
    cache_dir = Path(cache_dir or os.environ.get("DSAC_ROS_CACHE", REPO_ROOT / ".cache"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"test_localizer_tiny_map_v{FIT_VERSION}.pt"
    if not path.exists():
        fit_tiny_map(path)  # save_map writes atomically: a concurrent run never reads half a file
    return path


__all__ = ["FIT_STRIDE", "INPUT_HEIGHT_PX", "build_tiny_map", "fit_tiny_map"]
