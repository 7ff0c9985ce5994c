"""Atomic file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = ".partial") -> Path:
    """Call ``write(temporary)`` for a temporary file next to ``path`` (same directory, so the final
    rename stays on one file system), then rename it over ``path``. The parent is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + suffix)
    write(temporary)
    os.replace(temporary, path)
    return path


__all__ = ["write_atomically"]
