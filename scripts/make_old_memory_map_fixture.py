"""A tiny dense memory map in format 1 (written by commit fb52886, before compact memories), and
what that code predicted with it (test/fixtures/).

    git worktree add /tmp/old fb52886 && (cd /tmp/old && python /path/to/this/script.py /tmp/old test/fixtures)

Run inside a checkout of the old commit (its dsac_ros is imported from argv[1]). A 16-channel random
encoder keeps the file small (0.2 MB); the memory holds 12 tiny mapping frames with depth.
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
from dsac_ros import mapping as mp  # noqa: E402
from dsac_ros.data.scenes import get_scene  # noqa: E402
from dsac_ros.localizer import Localizer  # noqa: E402
from dsac_ros.mapfile import MAP_FORMAT_VERSION, save_map  # noqa: E402
from dsac_ros.network import SceneCoordinateNetwork, build_head, build_network  # noqa: E402

assert MAP_FORMAT_VERSION == 1, "run this in a checkout of fb52886"
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
torch.manual_seed(0)
config = {"name": "fixture-memory", "encoder": {"channels": [4, 8, 8, 16], "residual_blocks": 1, "feature_channels": 16},
          "head": {"type": "memory", "frames": 0, "cells": 0, "retrieve_frames": 4}}
encoder = build_network({**config, "head": {"width": 4, "residual_blocks": 0}}).encoder
options = mp.MappingOptions(mode="rgbd", end_to_end=False, input_height_px=96, progress=False, device="cpu",
                            augmentation=mp.AugmentationOptions(passes=1))
frames = list(get_scene("tiny").render_frames("mapping"))[:12]
timer = mp.StageTimer()
mapping, validation, _ = mp.split_frames(frames, options, timer)
data = mp.build_buffer(mapping, validation, encoder, options, torch.device("cpu"), timer, use_depth=True)
config["head"].update(frames=data.mapping_frames, cells=max(b - a for _, _, a, b in data.plain_views()))
head = build_head(16, config["head"])
mp.fill_memory(head, data, use_depth=True, log=lambda message: None)
network = SceneCoordinateNetwork(encoder, head, data.scene_center_m, config)
path = save_map(out / "tiny_memory_map_fb52886.pt", network.eval(), 96, training={"commit": "fb52886"})
frame = get_scene("tiny").render_frames("test").__next__()
localizer = Localizer(path, device="cpu")
coords, _, _ = localizer.predict(frame.image_rgb)
np.save(out / "tiny_memory_map_fb52886_test0_coords_m.npy", coords.numpy().astype(np.float32))
print(path, path.stat().st_size, "bytes")
