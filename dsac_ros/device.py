"""Device selection: ``auto | cpu | cuda | cuda:N``, with a clear error instead of a CUDA crash."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch

logger = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"


class DeviceError(ValueError):
    """The requested device does not exist on this machine or is not understood."""


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device string into a usable ``torch.device``.

    ``auto`` (or None) picks ``cuda:0`` when a GPU is visible, else ``cpu``. ``cuda`` and
    ``cuda:N`` are checked against the GPUs torch can see, so a machine without a GPU gets a
    DeviceError naming the reason instead of an error deep inside the first forward pass.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text[5:] if text.startswith("cuda:") else "0"
        if not index_text.isdigit():
            raise DeviceError(f"device {spec!r}: CUDA index must be a non-negative integer ({DEVICE_CHOICES})")
        index = int(index_text)
        if not torch.cuda.is_available():
            reason = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                      else "no CUDA GPU is visible (driver missing or CUDA_VISIBLE_DEVICES empty)")
            raise DeviceError(f"device {spec!r} requested but {reason}; use device 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device {spec!r} requested but only {count} CUDA device(s) are visible")
        return torch.device(f"cuda:{index}")
    raise DeviceError(f"unknown device {spec!r}; choose from {DEVICE_CHOICES}")


def describe_device(device: torch.device) -> str:
    """Human-readable name for logs: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA ...)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``count`` inside the block (0: left as they are), restored after.

    torch's setting is per calling thread (OpenMP) plus the default of threads started later, so
    a block in one thread leaves other threads' running work alone. Costs under a microsecond."""
    count = int(count)
    before = torch.get_num_threads()
    if count <= 0 or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
