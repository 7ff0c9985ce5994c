"""Encoder transfer: how well the real mapping pipeline maps rooms the encoder never saw.

Used by ``dsac-ros pretrain-encoder --evaluate`` to compare an encoder file with the calibrated
random encoder: for held-out procedural rooms, ``map_recording`` (rgbd, no end-to-end stage) on
random views, then the ``Localizer`` on perturbed views near them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from dsac_ros.pretrain import perturbed_views


def evaluate_transfer(encoder_path: Optional[Path], seeds: list[int], minutes: float = 1.0,
                      mapping_views: int = 80, test_views: int = 30, device: str = "cpu",
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """How well the real mapping pipeline maps unseen rooms with an encoder file.

    For each held-out room (``dsac_ros.pretrain.HELDOUT_SEED_BASE + i``, never trained on): ``map_recording`` in
    rgbd mode for ``minutes`` (no end-to-end stage) on random views, then the Localizer on
    perturbed views near them (7-Scenes-like reach). encoder_path None: the calibrated random
    encoder (the baseline). Returns per room and mean: % within 5 cm / 5 deg and median errors.
    """
    import tempfile

    from dsac_ros.data.render import render
    from dsac_ros.data.scenes import BASE_INTRINSICS, FRAME_PERIOD_NS, random_scene
    from dsac_ros.data.trajectories import random_views
    from dsac_ros.evaluation import compute_metrics, evaluate_frames
    from dsac_ros.frame import Frame
    from dsac_ros.localizer import Localizer
    from dsac_ros.mapping import MappingOptions, map_recording

    size = (320, 240)
    intrinsics = BASE_INTRINSICS.resized(*size)
    rooms = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        scene = random_scene(seed)
        mapping_poses = random_views(scene, mapping_views, seed)
        test_poses = perturbed_views(mapping_poses[rng.choice(mapping_views, test_views, replace=False)], rng)
        test_poses = test_poses[scene.clearance_m(test_poses[:, :3, 3]) > 0.1]  # never inside geometry

        def frames(poses: np.ndarray) -> list:
            rendered = []
            for index, pose in enumerate(poses):
                image, depth = render(scene, pose, intrinsics)
                rendered.append(Frame(image, intrinsics, index * FRAME_PERIOD_NS, depth, pose, f"room{seed}-{index}"))
            return rendered

        with tempfile.TemporaryDirectory() as tmp:
            map_path = Path(tmp) / "room.pt"
            options = MappingOptions(minutes=minutes, end_to_end=False, device=device, progress=False,
                                     encoder_path=None if encoder_path is None else str(encoder_path))
            map_recording(frames(mapping_poses), map_path, options, log=lambda _: None)
            records = evaluate_frames(Localizer(map_path, device=device), frames(test_poses), progress=False)
        metrics = compute_metrics(records)
        result = {"seed": seed, "frames": metrics["frames"], "pct_5cm_5deg": metrics["pct_5cm_5deg"],
                  "median_translation_cm": metrics["median_translation_cm"],
                  "median_rotation_deg": metrics["median_rotation_deg"]}
        log(json.dumps(result))
        rooms.append(result)
    summary: dict[str, Any] = {"encoder": str(encoder_path) if encoder_path else "random (calibrated)"}
    for key in ("pct_5cm_5deg", "median_translation_cm", "median_rotation_deg"):
        values = [r[key] for r in rooms if r[key] is not None]
        summary[key] = float(np.mean(values)) if values else None
    summary["rooms"] = rooms
    return summary
