"""A small TF tree of our own: transforms in, `target_T_source` at a stamp out. ROS-free.

tf2_ros is not needed (it is not on PyPI). The localizer node asks it `odom -> base` at an image
stamp and the static `base -> camera` mount (fed by ``dsac_ros.ros.tf_buffer.TfListener``); the
bag reader asks it for ground truth through /tf and /tf_static. Semantics follow tf2:

- frames form a tree, each child has one parent (the newest message decides the parent);
- dynamic edges keep `cache_time_s` of history and are interpolated (linear translation,
  slerp rotation) between the two samples around the stamp; a stamp outside the buffered
  interval raises ``ExtrapolationError`` (tf2 does not extrapolate either);
- static edges (/tf_static) hold at every stamp;
- ``stamp_ns == 0`` asks for the latest time at which the whole chain is available;
- data older than the cache window of its edge is dropped (as tf2 does); after a backwards
  time jump (bag loop) the owner calls ``clear()``;
- ``lookup(..., tolerance_ns=T)`` also answers up to T beyond either end of an edge's buffered
  interval, with that end's sample (recordings whose TF and image stamps differ by a little).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from dsac_ros.geometry import invert_pose, make_pose, quaternion_xyzw_from_rotation, rotation_from_quaternion_xyzw

MAX_CHAIN_LENGTH = 100


class TransformError(LookupError):
    """A transform cannot be looked up; the message says which frames and why."""


class FrameNotFoundError(TransformError):
    """A frame is unknown, or the two frames are not connected in the tree."""


class ExtrapolationError(TransformError):
    """The stamp lies outside the interval buffered for an edge of the chain."""


def _format_s(stamp_ns: int) -> str:
    return f"{stamp_ns * 1e-9:.3f} s"


def slerp_xyzw(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (x, y, z, w), shortest path. Returns (4,)."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        # Nearly parallel: normalised lerp is exact to rounding and avoids dividing by sin(~0).
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    return (np.sin((1.0 - fraction) * theta) * q0 + np.sin(fraction * theta) * q1) / sin_theta


@dataclass
class _Edge:
    """parent_T_child history of one child frame."""

    parent: str
    static: bool
    stamps_ns: list = field(default_factory=list)
    translations: list = field(default_factory=list)
    quaternions_xyzw: list = field(default_factory=list)

    def newest_ns(self) -> int:
        return self.stamps_ns[-1]

    def oldest_ns(self) -> int:
        return self.stamps_ns[0]

    def insert(self, stamp_ns: int, translation: np.ndarray, quaternion_xyzw: np.ndarray, cache_time_ns: int) -> bool:
        """Insert a sample in stamp order; False when it is older than the cache window."""
        if self.static:
            self.stamps_ns, self.translations, self.quaternions_xyzw = [0], [translation], [quaternion_xyzw]
            return True
        if self.stamps_ns and stamp_ns < self.newest_ns() - cache_time_ns:
            return False
        index = bisect.bisect_left(self.stamps_ns, stamp_ns)
        if index < len(self.stamps_ns) and self.stamps_ns[index] == stamp_ns:
            self.translations[index], self.quaternions_xyzw[index] = translation, quaternion_xyzw
        else:
            self.stamps_ns.insert(index, stamp_ns)
            self.translations.insert(index, translation)
            self.quaternions_xyzw.insert(index, quaternion_xyzw)
        # Keep the window [newest - cache_time, newest].
        cut = bisect.bisect_left(self.stamps_ns, self.newest_ns() - cache_time_ns)
        if cut > 0:
            del self.stamps_ns[:cut], self.translations[:cut], self.quaternions_xyzw[:cut]
        return True

    def at(self, stamp_ns: int, child: str, tolerance_ns: int = 0) -> np.ndarray:
        """(4, 4) parent_T_child at ``stamp_ns``; raises ExtrapolationError outside the buffer
        (by more than ``tolerance_ns``)."""
        if self.static:
            return make_pose(rotation_from_quaternion_xyzw(self.quaternions_xyzw[0]), self.translations[0])
        if self.oldest_ns() - tolerance_ns <= stamp_ns < self.oldest_ns():
            stamp_ns = self.oldest_ns()
        elif self.newest_ns() < stamp_ns <= self.newest_ns() + tolerance_ns:
            stamp_ns = self.newest_ns()
        if stamp_ns < self.oldest_ns() or stamp_ns > self.newest_ns():
            direction = "past" if stamp_ns < self.oldest_ns() else "future"
            raise ExtrapolationError(
                f"lookup of {self.parent} -> {child} at {_format_s(stamp_ns)} would extrapolate into the "
                f"{direction}: buffered data covers {_format_s(self.oldest_ns())} .. {_format_s(self.newest_ns())}")
        index = bisect.bisect_left(self.stamps_ns, stamp_ns)
        if self.stamps_ns[index] == stamp_ns:
            translation, quaternion = self.translations[index], self.quaternions_xyzw[index]
        else:
            t0, t1 = self.stamps_ns[index - 1], self.stamps_ns[index]
            fraction = (stamp_ns - t0) / (t1 - t0)
            translation = (1.0 - fraction) * self.translations[index - 1] + fraction * self.translations[index]
            quaternion = slerp_xyzw(self.quaternions_xyzw[index - 1], self.quaternions_xyzw[index], fraction)
        return make_pose(rotation_from_quaternion_xyzw(quaternion), translation)


class TfBuffer:
    """Thread-safe transform tree with per-edge history (see the module docstring)."""

    def __init__(self, cache_time_s: float = 10.0) -> None:
        if not cache_time_s > 0:
            raise ValueError(f"cache_time_s must be positive, got {cache_time_s}")
        self._cache_time_ns = int(cache_time_s * 1e9)
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()
        self.dropped_old = 0

    def set_transform(self, parent: str, child: str, stamp_ns: int, parent_T_child: np.ndarray,
                      static: bool = False) -> bool:
        """Add one sample of ``parent_T_child`` (4, 4). Returns False if it was dropped as too old.

        Raises ValueError for an empty frame name, a self-loop or a non-finite transform.
        """
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"invalid transform {parent!r} -> {child!r}")
        parent_T_child = np.asarray(parent_T_child, dtype=np.float64)
        if parent_T_child.shape != (4, 4) or not np.all(np.isfinite(parent_T_child)):
            raise ValueError(f"transform {parent} -> {child} is not a finite 4x4 matrix")
        translation = parent_T_child[:3, 3].copy()
        quaternion = quaternion_xyzw_from_rotation(parent_T_child[:3, :3])
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = _Edge(parent=parent, static=static)
                self._edges[child] = edge
            kept = edge.insert(int(stamp_ns), translation, quaternion, self._cache_time_ns)
            if not kept:
                self.dropped_old += 1
            return kept

    def clear(self, keep_static: bool = False) -> None:
        """Forget buffered transforms (all, or only the dynamic ones with ``keep_static``)."""
        with self._lock:
            if keep_static:
                self._edges = {child: edge for child, edge in self._edges.items() if edge.static}
            else:
                self._edges.clear()

    def frames(self) -> dict[str, str]:
        """{child: parent} of every known edge."""
        with self._lock:
            return {child: edge.parent for child, edge in self._edges.items()}

    def _ancestors(self, frame: str) -> list[tuple[str, Optional[_Edge]]]:
        """[(frame, edge to its parent), ..., (root, None)] walking up from ``frame``."""
        chain = []
        seen = set()
        while True:
            if frame in seen or len(chain) > MAX_CHAIN_LENGTH:
                raise FrameNotFoundError(f"TF tree has a loop through frame {frame!r}")
            seen.add(frame)
            edge = self._edges.get(frame)
            chain.append((frame, edge))
            if edge is None:
                return chain
            frame = edge.parent

    def _is_known(self, frame: str) -> bool:
        return frame in self._edges or any(edge.parent == frame for edge in self._edges.values())

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int = 0, tolerance_ns: int = 0) -> np.ndarray:
        """(4, 4) ``target_T_source`` at ``stamp_ns`` (0 = latest time the whole chain has);
        ``tolerance_ns``: see the module docstring.

        Raises FrameNotFoundError (unknown or unconnected frames) or ExtrapolationError.
        """
        target_frame, source_frame = target_frame.lstrip("/"), source_frame.lstrip("/")
        if target_frame == source_frame:
            return np.eye(4)
        with self._lock:
            for frame in (target_frame, source_frame):
                if not self._is_known(frame):
                    known = sorted(set(self._edges) | {edge.parent for edge in self._edges.values()})
                    raise FrameNotFoundError(f"frame {frame!r} does not exist in TF (known: {', '.join(known) or 'none'})")
            up_from_source = self._ancestors(source_frame)
            up_from_target = self._ancestors(target_frame)
            source_names = [name for name, _ in up_from_source]
            common = next((name for name, _ in up_from_target if name in source_names), None)
            if common is None:
                raise FrameNotFoundError(
                    f"frames {target_frame!r} and {source_frame!r} are not connected: their roots are "
                    f"{up_from_target[-1][0]!r} and {up_from_source[-1][0]!r}")
            source_edges = [(name, edge) for name, edge in up_from_source[:source_names.index(common)]]
            target_names = [name for name, _ in up_from_target]
            target_edges = [(name, edge) for name, edge in up_from_target[:target_names.index(common)]]
            edges = source_edges + target_edges
            if stamp_ns == 0:
                dynamic = [edge for _, edge in edges if not edge.static]
                stamp_ns = min((edge.newest_ns() for edge in dynamic), default=0)
            common_T_source = np.eye(4)
            for name, edge in source_edges:
                common_T_source = edge.at(stamp_ns, name, tolerance_ns) @ common_T_source
            common_T_target = np.eye(4)
            for name, edge in target_edges:
                common_T_target = edge.at(stamp_ns, name, tolerance_ns) @ common_T_target
        return invert_pose(common_T_target) @ common_T_source

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int = 0, tolerance_ns: int = 0) -> bool:
        try:
            self.lookup(target_frame, source_frame, stamp_ns, tolerance_ns)
        except TransformError:
            return False
        return True


__all__ = ["ExtrapolationError", "FrameNotFoundError", "TfBuffer", "TransformError", "slerp_xyzw"]
