"""The error every recording reader raises for data it cannot use."""

from __future__ import annotations


class RecordingError(ValueError):
    """A folder or bag that cannot be read as frames: a missing topic or file, an unknown image
    encoding, missing intrinsics, a corrupt or truncated file. The message names the problem and
    the path."""
