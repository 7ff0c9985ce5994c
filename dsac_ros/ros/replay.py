"""``dsac-ros replay BAG [--rate R] [--loop] [--topics ...]``: play a rosbag2 into the live ROS graph.

The role of ``ros2 bag play --clock`` where rosbag2 is not installed. The bag (MCAP or sqlite3) is
read with ``rosbags``; every message is published once, in the bag's timestamp order (the
recording time, as ``ros2 bag play`` uses), with the original spacing divided by ``rate``. The
recorded CDR bytes are published as they are (rclpy's ``Publisher.publish(bytes)``), so nothing
is deserialised or converted on the way.

``/clock`` (rosgraph_msgs/Clock) carries the bag time: the stamp of each message just before it is
published, and ticks in between at ``clock_rate_hz``, so nodes run with ``use_sim_time:=true``
see time advance with the recording. With ``loop`` the bag restarts and ``/clock`` jumps
backwards, which the localizer node takes as a reset.

QoS of the publishers (a reliable publisher also serves best-effort subscribers such as the
localizer's sensor-data inputs; the reverse does not hold):
    /tf_static, and any topic recorded with transient_local durability: reliable, transient_local
    /tf: reliable, volatile, keep last 100
    everything else: reliable, volatile, keep last 10
    /clock: reliable, volatile, keep last 10

``BagPlayer`` is usable in-process: ``evaluate-live`` drives it message by message (``publish``),
the verb and tests call ``play`` (real time, with injectable clock and sleep functions).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

DEFAULT_CLOCK_RATE_HZ = 40.0  # ros2 bag play --clock's default
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"


class ReplayError(ValueError):
    """The bag cannot be played as asked (missing file, unknown topic, no message type)."""


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: topic, type ("pkg/msg/Name"), recording time and its CDR bytes."""

    topic: str
    msgtype: str
    time_ns: int
    data: bytes


@dataclass
class PlaybackStats:
    """What ``BagPlayer.play`` did: messages per topic, passes through the bag, bag time span."""

    published: dict[str, int] = field(default_factory=dict)
    passes: int = 0
    first_time_ns: Optional[int] = None
    last_time_ns: Optional[int] = None
    stopped: bool = False

    @property
    def total(self) -> int:
        return sum(self.published.values())


def message_class(msgtype: str):
    """The rclpy message class of "pkg/msg/Name" (ReplayError when that package is not installed)."""
    package, _, name = msgtype.partition("/msg/")
    if not package or not name:
        raise ReplayError(f"not a message type: {msgtype!r}")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as error:
        raise ReplayError(f"message type {msgtype} is not available in this ROS environment ({error})") from None


def topic_qos(topic: str, transient_local: bool = False):
    """The publisher QoS of a replayed topic (see the module docstring)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    latched = transient_local or topic == TF_STATIC_TOPIC
    depth = 100 if topic in (TF_TOPIC, TF_STATIC_TOPIC) else 10
    # /tf_static keeps more than tf2's depth 1: a bag may hold several static messages (one per
    # broadcaster), and a late subscriber should get them all.
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def clock_qos():
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    # Reliable: matches rclpy/rclcpp TimeSource (best effort) and reliable echo tools alike.
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _recorded_transient_local(connection) -> bool:
    from rosbags.interfaces import QosDurability

    profiles = getattr(getattr(connection, "ext", None), "offered_qos_profiles", None) or []
    return any(getattr(p, "durability", None) == QosDurability.TRANSIENT_LOCAL for p in profiles
               if not isinstance(p, str))


class BagPlayer:
    """Publishes a rosbag2's messages through ``node`` (an rclpy Node).

    bag_path: a bag directory or a single .mcap / .db3 file; topics: the topics to play (None: all;
    an unknown topic raises ReplayError); rate: playback speed factor (> 0); loop: restart at the
    end; clock: publish /clock; clock_rate_hz: /clock ticks between messages; skip_unavailable:
    topics whose message type is not installed are skipped (listed in ``skipped``) instead of
    raising. ``monotonic`` and ``sleep`` are the wall clock ``play`` uses (tests inject fakes).
    """

    def __init__(self, node, bag_path, *, topics: Optional[Iterable[str]] = None, rate: float = 1.0,
                 loop: bool = False, clock: bool = True, clock_rate_hz: float = DEFAULT_CLOCK_RATE_HZ,
                 skip_unavailable: bool = True, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from rosbags.rosbag2 import Reader

        if not rate > 0:
            raise ReplayError(f"rate must be positive, got {rate}")
        if not clock_rate_hz > 0:
            raise ReplayError(f"clock rate must be positive, got {clock_rate_hz}")
        self.node = node
        self.path = Path(bag_path)
        self.rate = float(rate)
        self.loop = bool(loop)
        self.clock_period_s = 1.0 / float(clock_rate_hz)
        self._monotonic, self._sleep = monotonic, sleep
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError as error:
            raise ReplayError(f"{self.path}: no such bag ({error})") from None
        except Exception as error:  # rosbags raises its own errors for damaged metadata / storage
            raise ReplayError(f"{self.path}: cannot open bag: {type(error).__name__}: {error}") from None
        present = {topic: info.msgtype for topic, info in self._reader.topics.items()}
        wanted = list(present) if topics is None else list(dict.fromkeys(topics))
        unknown = [t for t in wanted if t not in present]
        if unknown:
            self.close()
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(present.items())) or "none"
            raise ReplayError(f"{self.path}: no topic {', '.join(unknown)} in the bag; topics present: {listing}")
        self.skipped: dict[str, str] = {}
        self.publishers = {}
        self._connections = []
        for topic in wanted:
            connections = list(self._reader.topics[topic].connections)
            try:
                kind = message_class(present[topic])
            except ReplayError as error:
                if not skip_unavailable:
                    self.close()
                    raise
                self.skipped[topic] = str(error)
                node.get_logger().warning(f"not playing {topic}: {error}")
                continue
            latched = any(_recorded_transient_local(c) for c in connections)
            self.publishers[topic] = node.create_publisher(kind, topic, topic_qos(topic, latched))
            self._connections += connections
        self.topics = {topic: present[topic] for topic in self.publishers}
        self.message_counts = {topic: int(self._reader.topics[topic].msgcount) for topic in self.publishers}
        self._clock_publisher = None
        self._clock_type = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_type = Clock
            self._clock_publisher = node.create_publisher(Clock, "/clock", clock_qos())
        self._last_clock_ns: Optional[int] = None

    # ------------------------------------------------------------------ reading

    def messages(self) -> Iterator[BagMessage]:
        """One pass over the played topics, in the bag's timestamp order."""
        if not self._connections:
            return
        for connection, time_ns, data in self._reader.messages(connections=self._connections):
            yield BagMessage(connection.topic, connection.msgtype, int(time_ns), bytes(data))

    def close(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None and reader.is_open:
            reader.close()

    def __enter__(self) -> "BagPlayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ publishing

    def publish_clock(self, time_ns: int, allow_backwards: bool = False) -> None:
        """Publish /clock = time_ns when it advances; backwards only with ``allow_backwards`` (a new
        loop pass). Messages sharing a stamp send one /clock."""
        if self._clock_publisher is None:
            return
        if not allow_backwards and self._last_clock_ns is not None and time_ns <= self._last_clock_ns:
            return
        message = self._clock_type()
        message.clock.sec, message.clock.nanosec = divmod(int(time_ns), 1_000_000_000)
        self._clock_publisher.publish(message)
        self._last_clock_ns = int(time_ns)

    def publish(self, message: BagMessage, allow_clock_backwards: bool = False) -> None:
        """/clock at the message's time, then the message's recorded bytes on its topic."""
        self.publish_clock(message.time_ns, allow_backwards=allow_clock_backwards)
        self.publishers[message.topic].publish(message.data)

    def play(self, stop: Optional[threading.Event] = None,
             on_publish: Optional[Callable[[BagMessage], None]] = None,
             before_publish: Optional[Callable[[BagMessage], None]] = None) -> PlaybackStats:
        """Publish the bag with its original spacing divided by ``rate`` (blocking; once, or until
        ``stop`` is set with ``loop``). ``before_publish(message)`` / ``on_publish(message)`` run
        just before / after each message is sent."""
        stats = PlaybackStats(published={topic: 0 for topic in self.publishers})
        while True:
            pass_start_s = self._monotonic()
            first_ns: Optional[int] = None
            new_pass = True
            for message in self.messages():
                if first_ns is None:
                    first_ns = message.time_ns
                    stats.first_time_ns = first_ns if stats.first_time_ns is None else stats.first_time_ns
                due_s = pass_start_s + (message.time_ns - first_ns) * 1e-9 / self.rate
                if not self._wait_until(due_s, pass_start_s, first_ns, message.time_ns, stop):
                    stats.stopped = True
                    return stats
                if before_publish is not None:
                    before_publish(message)
                self.publish(message, allow_clock_backwards=new_pass)
                new_pass = False
                stats.published[message.topic] += 1
                stats.last_time_ns = message.time_ns
                if on_publish is not None:
                    on_publish(message)
            stats.passes += 1
            if not self.loop or first_ns is None or (stop is not None and stop.is_set()):
                stats.stopped = stop is not None and stop.is_set()
                return stats

    def _wait_until(self, due_s: float, pass_start_s: float, first_ns: int, message_ns: int,
                    stop: Optional[threading.Event]) -> bool:
        """Sleep until ``due_s``, ticking /clock with the bag time meanwhile; False when stopped."""
        while True:
            if stop is not None and stop.is_set():
                return False
            now_s = self._monotonic()
            if now_s >= due_s:
                return True
            bag_ns = first_ns + int((now_s - pass_start_s) * self.rate * 1e9)
            # The tick never passes the next message's time (that is published with the message)
            # and never goes backwards (publish_clock refuses).
            self.publish_clock(min(bag_ns, message_ns))
            self._sleep(min(due_s - now_s, self.clock_period_s))
