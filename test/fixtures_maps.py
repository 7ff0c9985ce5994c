"""The cached tiny-scene map as a pytest fixture (the map itself: dsac_ros.benchmarks.tiny_map)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsac_ros.benchmarks.tiny_map import FIT_NETWORK, FIT_STEPS, FIT_STRIDE, FIT_VERSION, INPUT_HEIGHT_PX, build_tiny_map, fit_tiny_map


@pytest.fixture(scope="session")
def tiny_map_path(cache_dir) -> Path:
    return build_tiny_map(cache_dir)


__all__ = ["FIT_NETWORK", "FIT_STEPS", "FIT_STRIDE", "FIT_VERSION", "INPUT_HEIGHT_PX", "build_tiny_map", "fit_tiny_map",
           "tiny_map_path"]
