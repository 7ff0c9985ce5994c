"""Shared test setup. Module-specific fixtures live in the test modules or in test/fixtures_*.py."""

import os
import random
from pathlib import Path

import pytest
import torch
from tolerances import install_margin_recording

REPO_ROOT = Path(__file__).resolve().parents[1]

# DDS: keep discovery on the loopback interface, and give each test session its own domain so
# concurrent runs on one machine do not see each other's nodes. Must happen before rclpy.init.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))

# The tolerance audit (bench/bench_tolerances.py) runs the suite with a given torch thread count
# and records how close every numeric check comes to its bound (test/tolerances.py).
if os.environ.get("DSAC_ROS_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["DSAC_ROS_TORCH_THREADS"]))
install_margin_recording()


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Directory for expensive fixtures reused across runs (git-ignored)."""
    path = Path(os.environ.get("DSAC_ROS_CACHE", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module, restored afterwards: on a shared 2-core machine the thread
    pool's spin-waiting costs up to 10x on small tensors (measured: a head step 560 ms with two
    threads vs 34 ms with one, under load 6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
