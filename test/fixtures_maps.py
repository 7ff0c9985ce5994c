"""Tiny-scene maps as pytest fixtures: the cached fitted map (dsac_ros.benchmarks.tiny_map) and a
scene-memory map with the mapping defaults (built in seconds, once per suite)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from dsac_ros.benchmarks.tiny_map import FIT_NETWORK, FIT_STEPS, FIT_STRIDE, FIT_VERSION, INPUT_HEIGHT_PX, build_tiny_map, fit_tiny_map


@pytest.fixture(scope="session")
def tiny_map_path(cache_dir) -> Path:
    return build_tiny_map(cache_dir)


# 96-px input of the 160 x 120 tiny frames: 12 x 16 cells of 10 px.
MEMORY_INPUT_HEIGHT_PX = 96


@pytest.fixture(scope="session")
def tiny_memory_map_path(tmp_path_factory) -> Path:
    """The tiny scene's rgbd scene-memory map with the mapping defaults (keyframes, quantised keys),
    no end-to-end stage (deterministic: no training)."""
    from dsac_ros import mapping as mp
    from dsac_ros.data.scenes import get_scene

    options = mp.MappingOptions(mode="rgbd", end_to_end=False, input_height_px=MEMORY_INPUT_HEIGHT_PX,
                                progress=False, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = mp.map_recording(get_scene("tiny").render_frames("mapping"),
                                      tmp_path_factory.mktemp("tiny_memory") / "rgbd.pt", options,
                                      log=lambda message: None)
    finally:
        torch.set_num_threads(threads)
    return result.path


__all__ = ["MEMORY_INPUT_HEIGHT_PX", "FIT_NETWORK", "FIT_STEPS", "FIT_STRIDE", "FIT_VERSION", "INPUT_HEIGHT_PX", "build_tiny_map", "fit_tiny_map",
           "tiny_map_path", "tiny_memory_map_path"]
