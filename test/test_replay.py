"""dsac-ros replay: every message once, unchanged, in stamp order; /clock advancing with the bag time.

Real DDS in one process (a private rclpy context per test module). Timing is never asserted:
the rate is checked with an injected fake wall clock, against the bag's own stamps.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

from dsac_ros.camera import Intrinsics
from dsac_ros.data.rosbag import write_bag
from dsac_ros.frame import Frame
from dsac_ros.geometry import make_pose, rotation_from_axis_angle
from dsac_ros.ros.node import sensor_qos
from dsac_ros.ros.replay import BagPlayer, ReplayError, message_class
from ros_helpers import spin_until

pytestmark = pytest.mark.ros

S = 1_000_000_000
FIRST_NS = 1_700_000_000 * S
# Uneven spacing, so a schedule that ignored the stamps would show.
OFFSETS_NS = [0, 100_000_000, 150_000_000, 400_000_000, 430_000_000]
WAIT_S = 20.0


def small_frames():
    rng = np.random.default_rng(0)
    intrinsics = Intrinsics(10.0, 10.0, 4.0, 3.0, 8, 6)
    for i, offset in enumerate(OFFSETS_NS):
        image = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        depth = rng.uniform(0.5, 3.0, (6, 8)).astype(np.float32)
        pose = make_pose(rotation_from_axis_angle([0.0, 0.1 * i, 0.0]), [0.1 * i, 0.0, 1.0])
        yield Frame(image, intrinsics, FIRST_NS + offset, depth, pose, f"f{i}")


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"replay_{request.param}") / "bag"
    write_bag(small_frames(), path, storage=request.param)
    return path


def bag_contents(path):
    """[(topic, time_ns, bytes)] in the bag's timestamp order."""
    with Reader(path) as reader:
        return [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]


class FakeWallClock:
    """monotonic() and sleep() for BagPlayer: sleeping advances time exactly, instantly."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now_s += seconds


class Listener:
    """A node recording the raw bytes of every topic of the bag, and /clock."""

    def __init__(self, context, topics, name="replay_listener"):
        self.node = rclpy.create_node(name, context=context)
        self.raw = {topic: [] for topic in topics}
        self.clock_ns = []
        self.best_effort_images = []
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msgtype in topics.items():
            self.node.create_subscription(message_class(msgtype), topic, self.raw[topic].append, reliable, raw=True)
        # The localizer subscribes to images with the sensor-data profile: it must connect too.
        self.node.create_subscription(message_class("sensor_msgs/msg/Image"), "/camera/image_raw",
                                      self.best_effort_images.append, sensor_qos(depth=100), raw=True)
        self.node.create_subscription(Clock, "/clock", lambda m: self.clock_ns.append(
            m.clock.sec * S + m.clock.nanosec), reliable)


@pytest.fixture(scope="module")
def ros(bag):
    context = rclpy.Context()
    rclpy.init(context=context)
    with Reader(bag) as reader:
        topics = {topic: info.msgtype for topic, info in reader.topics.items()}
    listener = Listener(context, topics)
    player_node = rclpy.create_node("replay_test_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener.node)
    executor.add_node(player_node)
    yield context, executor, listener, player_node
    executor.shutdown()
    listener.node.destroy_node()
    player_node.destroy_node()
    rclpy.shutdown(context=context)


def reset(listener):
    for values in listener.raw.values():
        values.clear()
    listener.clock_ns.clear()
    listener.best_effort_images.clear()


def play_and_collect(executor, listener, player, expected_total, **play_kwargs):
    """Play in a thread while spinning; returns (stats, messages in publication order)."""
    assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in player.publishers.values()),
                      WAIT_S)
    published = []
    result = {}

    def on_publish(message):
        published.append(message)
        callback = play_kwargs.get("then")
        if callback is not None:
            callback(published)

    thread = threading.Thread(target=lambda: result.setdefault(
        "stats", player.play(stop=play_kwargs.get("stop"), on_publish=on_publish)))
    thread.start()
    spin_until(executor, lambda: not thread.is_alive(), WAIT_S)
    thread.join(WAIT_S)
    assert spin_until(executor, lambda: sum(map(len, listener.raw.values())) >= expected_total, WAIT_S)
    # /clock and the best-effort copy of the images are other subscriptions: let them finish too.
    images = sum(1 for m in published if m.topic == "/camera/image_raw")
    assert spin_until(executor, lambda: listener.clock_ns[-1:] == [published[-1].time_ns]
                      and len(listener.best_effort_images) >= images, WAIT_S)
    return result["stats"], published


def test_every_message_once_unchanged_in_stamp_order_with_clock(ros, bag):
    _, executor, listener, node = ros
    reset(listener)
    recorded = bag_contents(bag)
    with BagPlayer(node, bag, rate=20.0) as player:
        stats, published = play_and_collect(executor, listener, player, len(recorded))
    # Published: exactly the bag, in its timestamp order (which is stamp order).
    assert [(m.topic, m.time_ns, m.data) for m in published] == recorded
    times = [m.time_ns for m in published]
    assert times == sorted(times)
    assert stats.total == len(recorded) and stats.passes == 1
    # Received: each topic's messages once, byte for byte, in order.
    for topic in listener.raw:
        assert listener.raw[topic] == [data for t, _, data in recorded if t == topic]
    assert listener.best_effort_images == listener.raw["/camera/image_raw"]
    # /clock: never backwards, from the first to the last stamp, and past every message's stamp.
    clock = listener.clock_ns
    assert clock == sorted(set(clock))
    assert clock[0] == FIRST_NS and clock[-1] == FIRST_NS + OFFSETS_NS[-1]
    assert set(FIRST_NS + offset for offset in OFFSETS_NS) <= set(clock)


@pytest.mark.parametrize("rate", [0.5, 2.0, 8.0])
def test_rate_scales_the_wall_time_between_messages(ros, bag, rate):
    _, executor, listener, node = ros
    reset(listener)
    recorded = bag_contents(bag)
    wall = FakeWallClock()
    start_s = wall.now_s
    published_at = []
    clock_hz = 40.0
    with BagPlayer(node, bag, rate=rate, clock_rate_hz=clock_hz, monotonic=wall.monotonic,
                   sleep=wall.sleep) as player:
        _, published = play_and_collect(executor, listener, player, len(recorded),
                                        then=lambda done: published_at.append(wall.now_s))
    first_ns = recorded[0][1]
    for message, at_s in zip(published, published_at):
        # Wall time since the start = bag time since the first message / rate.
        assert at_s - start_s == pytest.approx((message.time_ns - first_ns) * 1e-9 / rate, abs=1e-9)
    # /clock between messages ticks in bag time: the previous stamp + k * rate / clock_hz.
    assert spin_until(executor, lambda: listener.clock_ns and listener.clock_ns[-1] == recorded[-1][1], WAIT_S)
    tick_ns = rate / clock_hz * 1e9
    stamps = sorted({t for _, t, _ in recorded})
    ticks = [c for c in listener.clock_ns if c not in stamps]
    assert ticks, "no /clock between messages"
    for c in ticks:
        previous = max(t for t in stamps if t < c)
        assert c < min(t for t in stamps if t > c)
        k = (c - previous) / tick_ns
        assert k >= 0.5 and abs(k - round(k)) * tick_ns <= 2, (c, k)
    assert listener.clock_ns == sorted(set(listener.clock_ns))
    # Slower playback, more ticks: the count follows the wall duration (bag span / rate).
    span_s = (recorded[-1][1] - first_ns) * 1e-9
    assert len(set(ticks)) == pytest.approx(span_s / rate * clock_hz, abs=len(stamps) + 1)


def test_loop_restarts_with_clock_jumping_back(ros, bag):
    _, executor, listener, node = ros
    reset(listener)
    recorded = bag_contents(bag)
    wall = FakeWallClock()
    stop = threading.Event()

    def stop_after_two_passes(published):
        if len(published) == 2 * len(recorded):
            stop.set()

    with BagPlayer(node, bag, rate=4.0, loop=True, monotonic=wall.monotonic, sleep=wall.sleep) as player:
        stats, published = play_and_collect(executor, listener, player, 2 * len(recorded), stop=stop,
                                            then=stop_after_two_passes)
    assert stats.passes == 2 and stats.stopped
    assert [(m.topic, m.time_ns, m.data) for m in published] == recorded + recorded
    for topic in listener.raw:
        once = [data for t, _, data in recorded if t == topic]
        assert listener.raw[topic] == once + once
    assert spin_until(executor, lambda: listener.clock_ns.count(recorded[0][1]) == 2, WAIT_S)
    clock = np.array(listener.clock_ns)
    backwards = np.flatnonzero(np.diff(clock) < 0)
    assert len(backwards) == 1 and clock[backwards[0] + 1] == recorded[0][1]


def test_topics_filter_and_unknown_topic(ros, bag):
    _, executor, listener, node = ros
    reset(listener)
    recorded = bag_contents(bag)
    wanted = ["/camera/image_raw", "/tf"]
    with BagPlayer(node, bag, topics=wanted, rate=50.0) as player:
        assert set(player.publishers) == set(wanted)
        expected = [r for r in recorded if r[0] in wanted]
        _, published = play_and_collect(executor, listener, player, len(expected))
    assert [(m.topic, m.time_ns, m.data) for m in published] == expected
    assert listener.raw["/camera/camera_info"] == [] and listener.raw["/ground_truth/pose"] == []
    with pytest.raises(ReplayError, match="no topic /nope.*topics present: /camera/camera_info"):
        BagPlayer(node, bag, topics=["/nope"])
    with pytest.raises(ReplayError, match="rate must be positive"):
        BagPlayer(node, bag, rate=0.0)


def test_replay_verb_reaches_another_participant(bag):
    """The verb, as a user runs it, seen from a separate rclpy context (another DDS participant)."""
    from dsac_ros.cli import main

    recorded = bag_contents(bag)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with Reader(bag) as reader:
            topics = {topic: info.msgtype for topic, info in reader.topics.items()}
        listener = Listener(context, topics, name="replay_verb_listener")
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(listener.node)
        code = {}
        thread = threading.Thread(target=lambda: code.setdefault("rc", main(
            ["replay", str(bag), "--rate", "10", "--delay", "2.0", "--topics", "/camera/image_raw", "/tf"])))
        thread.start()
        expected = {t: [d for topic, _, d in recorded if topic == t] for t in ("/camera/image_raw", "/tf")}
        assert spin_until(executor, lambda: all(len(listener.raw[t]) >= len(v) for t, v in expected.items()), 30.0)
        thread.join(30.0)
        assert code["rc"] == 0
        for topic, values in expected.items():
            assert listener.raw[topic] == values
        # /clock is another topic: it may arrive after the last message.
        assert spin_until(executor, lambda: listener.clock_ns and listener.clock_ns[-1] == FIRST_NS + OFFSETS_NS[-1],
                          WAIT_S)
        executor.shutdown()
        listener.node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_replay_verb_rejects_bad_input(tmp_path, capsys):
    from dsac_ros.cli import main

    assert main(["replay", str(tmp_path / "missing"), "--delay", "0"]) == 2
    assert "no such bag" in capsys.readouterr().err
    assert main(["replay", str(tmp_path), "--rate", "-1"]) == 2
