"""The one vocabulary of frame outcomes, shared by the localizer, evaluation and the ROS node.

``Status`` is a ``str`` enum, so ``result.status == "OK"`` and JSON / CSV output keep their plain
names; the ROS layer maps it to ``LocalizationStatus.STATE_*`` in one place
(``dsac_ros.ros.conversions.STATE_OF_STATUS``).
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Outcome of one frame (or the node's state between frames)."""

    OK = "OK"                # a pose was found and passed the gate
    LOST = "LOST"            # DSAC found no pose with enough support
    BAD_INPUT = "BAD_INPUT"  # the frame itself is unusable (encoding, size, intrinsics, depth, ...)
    NO_IMAGE = "NO_IMAGE"    # node only: no image for image_timeout_s
    NO_MODEL = "NO_MODEL"    # node only: no map loaded (none given, loading, or the load failed)
    DROPPED = "DROPPED"      # live evaluation: the node published nothing for this frame (newest wins)

    def __str__(self) -> str:  # the plain name (Enum's default would be "Status.OK"; StrEnum needs 3.11)
        return self.value


__all__ = ["Status"]
