"""Helpers for tests with real rclpy nodes over DDS (in-process executors)."""

from __future__ import annotations

import time
from typing import Callable


def spin_until(executor, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Spin ``executor`` until ``condition()`` holds or ``timeout_s`` passes; returns condition()."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()
