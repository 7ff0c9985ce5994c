"""Soak runs of the localizer node: a looped bag replay at a fixed rate, faults mixed in, map swaps.

The node runs in its own process, started as ``ros2 run dsac_ros localizer`` starts it, so its
memory (VmRSS from /proc) is its own and a crash shows as an exit. This process replays a bag's
images, CameraInfo and depth, looping, at ``rate_hz`` whatever the node's speed (newest wins in the
node; drops are counted), and listens to ``~/status`` and ``~/pose``. Stamps repeat on every loop,
as ``ros2 bag play --loop`` does, so the node resets at each loop; a status is attributed to the
latest frame sent with its stamp.

Faults (``fault_fraction`` of the frames, kinds in turn, each with the reason it must produce):
    unknown_encoding   an encoding no decoder knows
    wrong_size         the image at 3/4 size, CameraInfo unchanged
    truncated          half of the image bytes
    nan_depth          depth all NaN            (with depth)
    negative_depth     depth all negative       (with depth)
    zero_intrinsics    a CameraInfo with k = 0 for this frame only
    camera_info_size   a CameraInfo for twice the size for this frame only
A CameraInfo fault is sent before its image, and the good CameraInfo before the next frame, with
``camera_info_settle_s`` between, since CameraInfo and images travel on separate topics.

Map swaps (``swap_every`` frames): ``map_path`` alternates between the map and a copy of it, through
the node's set_parameters service, while frames keep streaming. Checked: the node says NO_MODEL
"loading map ..." during the reload, and every published pose names the map it was computed with.

``run_soak(...)`` returns the JSON-able result (``bench/bench_soak.py`` writes and prints it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

FAULTS_RGB = ("unknown_encoding", "wrong_size", "truncated", "zero_intrinsics", "camera_info_size")
FAULTS_DEPTH = ("nan_depth", "negative_depth")
# The part of the BAD_INPUT reason each fault must produce.
FAULT_REASONS = {
    "unknown_encoding": "encoding",
    "wrong_size": "but CameraInfo is for",
    "truncated": "image:",
    "nan_depth": "depth has no valid pixels",
    "negative_depth": "depth has no valid pixels",
    "zero_intrinsics": "CameraInfo:",
    "camera_info_size": "but CameraInfo is for",
}
NAMESPACE = "/soak"


@dataclass(frozen=True)
class SoakOptions:
    frames: int = 10_000
    rate_hz: float = 30.0
    fault_fraction: float = 0.0
    swap_every: int = 0  # frames between map_path changes; 0 = never
    warmup_frames: int = 300  # RSS growth is measured from here
    use_depth: bool = True
    seed: int = 0
    device: str = "cpu"
    min_inliers: int = 20
    camera_info_settle_s: float = 0.03
    answer_wait_s: float = 5.0  # after the last frame, for the statuses still in flight
    # Send each frame only once the previous one was answered (or answer_wait_s passed): what a
    # frame gets then depends on the frame, not on how busy the machine is (the test suite's soak).
    lockstep: bool = False
    start_timeout_s: float = 120.0


@dataclass
class SentFrame:
    index: int
    stamp_ns: int
    kind: str  # "good" or a fault name
    sent_s: float
    status: Any = None
    status_s: Optional[float] = None
    posed: bool = False
    pose: Any = None  # (4, 4) map_T_cam of the published pose


def _rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _percentiles(values) -> dict[str, Optional[float]]:
    values = np.asarray(values, dtype=np.float64)
    if not values.size:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max()), "count": int(values.size)}


def fault_schedule(options: SoakOptions) -> list[str]:
    """The kind of every frame: faults spread evenly (every 1/fraction-th frame after warm-up
    starts), their kinds in turn; deterministic for the options."""
    kinds = ["good"] * options.frames
    if options.fault_fraction <= 0:
        return kinds
    faults = FAULTS_RGB + (FAULTS_DEPTH if options.use_depth else ())
    period = max(1, int(round(1.0 / options.fault_fraction)))
    rng = np.random.default_rng(options.seed)
    start = int(rng.integers(period))
    for number, index in enumerate(range(start, options.frames, period)):
        kinds[index] = faults[number % len(faults)]
    return kinds


class _BagFrames:
    """The bag's frames (CDR bytes of image, CameraInfo, depth by stamp) and ground truth."""

    def __init__(self, bag_path, use_depth: bool) -> None:
        from rosbags.rosbag2 import Reader

        from dsac_ros.data.rosbag import BagTopics
        from dsac_ros.ros.evaluate_live import ground_truth, header_stamp_ns

        topics = BagTopics()
        self.image_topic, self.info_topic, self.depth_topic = topics.image, topics.camera_info, topics.depth
        wanted = {self.image_topic, self.info_topic} | ({self.depth_topic} if use_depth else set())
        by_stamp: dict[int, dict[str, bytes]] = {}
        with Reader(Path(bag_path)) as reader:
            missing = wanted - set(reader.topics)
            if missing:
                raise ValueError(f"{bag_path}: no topic {', '.join(sorted(missing))} in the bag")
            connections = [c for c in reader.connections if c.topic in wanted]
            for connection, _, data in reader.messages(connections=connections):
                stamp = header_stamp_ns(bytes(data))
                by_stamp.setdefault(stamp, {})[connection.topic] = bytes(data)
        self.frames = [(stamp, parts) for stamp, parts in sorted(by_stamp.items()) if wanted <= set(parts)]
        if not self.frames:
            raise ValueError(f"{bag_path}: no frame has all of {', '.join(sorted(wanted))}")
        self.truth = {stamp: pose for stamp, pose, _ in ground_truth(bag_path, topics.image, topics.camera_info,
                                                                    topics.pose, topics.map_frame, None)}


def _corrupt(kind: str, image, info, depth):
    """(image, info, depth) messages for a fault frame; the inputs are deserialised copies."""
    if kind == "unknown_encoding":
        image.encoding = "yuv_unheard_of"
    elif kind == "wrong_size":
        import cv2

        rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3)
        small = cv2.resize(rgb, (image.width * 3 // 4, image.height * 3 // 4), interpolation=cv2.INTER_AREA)
        image.height, image.width = small.shape[:2]
        image.step = image.width * 3
        image.data = small.tobytes()
    elif kind == "truncated":
        image.data = bytes(image.data)[: len(image.data) // 2]
    elif kind in ("nan_depth", "negative_depth"):
        values = np.frombuffer(bytes(depth.data), np.float32)
        values = np.full_like(values, np.nan) if kind == "nan_depth" else -np.abs(values) - 0.5
        depth.data = values.astype(np.float32).tobytes()
    elif kind == "zero_intrinsics":
        info.k = [0.0] * 9
    elif kind == "camera_info_size":
        info.width, info.height = info.width * 2, info.height * 2
        info.k = [v * 2.0 if i in (0, 2, 4, 5) else v for i, v in enumerate(info.k)]
    else:
        raise ValueError(f"unknown fault {kind!r}")
    return image, info, depth


def tiny_scene_bag(path, repeats: int = 10, period_s: float = 0.1) -> Path:
    """Write a bag of the tiny scene's frames that the tests' tiny map was fitted on (RGB-D,
    160 x 120, ground truth), ``repeats`` times over with stamps ``period_s`` apart, at ``path``.
    Frames the map knows localise, so the soak's accuracy rows mean something; the node resets
    once per pass of the bag, as with any looped replay."""
    from dataclasses import replace

    from dsac_ros.benchmarks.tiny_map import FIT_STRIDE
    from dsac_ros.data import write_bag
    from dsac_ros.data.scenes import get_scene

    fitted = list(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE))
    start_ns = fitted[0].stamp_ns
    frames = [replace(frame, stamp_ns=start_ns + int(round(index * period_s * 1e9)), name=f"{frame.name}-{index}")
              for index, frame in enumerate(fitted[i % len(fitted)] for i in range(repeats * len(fitted)))]
    path = Path(path)
    write_bag(frames, path)
    return path


def _node_command(map_path: str, options: SoakOptions, frames: _BagFrames) -> list[str]:
    remaps = [f"image:={frames.image_topic}", f"camera_info:={frames.info_topic}"]
    if options.use_depth:
        remaps.append(f"depth:={frames.depth_topic}")
    parameters = [f"map_path:={map_path}", f"device:={options.device}", "tf_mode:=map_to_camera",
                  f"min_inliers:={options.min_inliers}", f"use_depth:={str(options.use_depth).lower()}"]
    command = [sys.executable, "-c", "import sys; from dsac_ros.ros.node import main; sys.exit(main())",
               "--ros-args", "-r", f"__ns:={NAMESPACE}", "--log-level", "warn"]
    for remap in remaps:
        command += ["-r", remap]
    for parameter in parameters:
        command += ["-p", parameter]
    return command


def run_soak(bag_path, map_path, options: SoakOptions = SoakOptions(), progress=None) -> dict[str, Any]:
    """Play ``options.frames`` frames of the bag (looping) through a localizer node process."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from dsac_ros.msg import LocalizationStatus
    from dsac_ros.ros.conversions import pose_to_matrix, stamp_to_ns
    from dsac_ros.ros.node import sensor_qos

    frames = _BagFrames(bag_path, options.use_depth)
    kinds = fault_schedule(options)
    workdir = Path(tempfile.mkdtemp(prefix="dsac_soak_"))
    maps = [str(Path(map_path).resolve())]
    if options.swap_every:
        maps.append(str(workdir / ("swap_" + Path(map_path).name)))
        shutil.copy(map_path, maps[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                       env.get("PYTHONPATH", "")]))
    process = subprocess.Popen(_node_command(maps[0], options, frames), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    log_lines: list[str] = []

    context = rclpy.Context()
    rclpy.init(context=context)
    driver = rclpy.create_node("soak_driver", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(driver)
    latest: dict[int, SentFrame] = {}  # stamp -> the latest frame sent with it
    statuses_other: list[Any] = []  # statuses of no sent frame (timer: NO_MODEL while loading, NO_IMAGE)
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

    def on_status(msg) -> None:
        frame = latest.get(stamp_to_ns(msg.header.stamp))
        if frame is None or frame.status is not None:
            statuses_other.append(msg)
            return
        frame.status, frame.status_s = msg, time.perf_counter()

    def on_pose(msg) -> None:
        frame = latest.get(stamp_to_ns(msg.header.stamp))
        if frame is not None:
            frame.posed = True
            frame.pose = pose_to_matrix(msg.pose)

    base = f"{NAMESPACE}/localizer"
    driver.create_subscription(LocalizationStatus, f"{base}/status", on_status, reliable)
    driver.create_subscription(PoseStamped, f"{base}/pose", on_pose, reliable)
    publishers = {topic: driver.create_publisher(kind, topic, sensor_qos(depth=5)) for topic, kind in
                  ((frames.image_topic, Image), (frames.info_topic, CameraInfo), (frames.depth_topic, Image))}
    set_parameters = driver.create_client(SetParameters, f"{base}/set_parameters")

    def spin_for(seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        while True:
            remaining = deadline - time.perf_counter()
            executor.spin_once(timeout_sec=max(0.0, min(remaining, 0.005)))
            if remaining <= 0:
                return

    def spin_until(condition, timeout_s: float) -> bool:
        deadline = time.perf_counter() + timeout_s
        while not condition():
            if time.perf_counter() > deadline or process.poll() is not None:
                return condition()
            executor.spin_once(timeout_sec=0.01)
        return True

    sent: list[SentFrame] = []
    rss_samples: list[tuple[int, float]] = []  # (frames sent, MB)
    swaps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"options": asdict(options), "bag": str(bag_path), "maps": maps}
    try:
        wanted = [publishers[frames.image_topic], publishers[frames.info_topic]]
        if options.use_depth:
            wanted.append(publishers[frames.depth_topic])
        if not spin_until(lambda: all(p.get_subscription_count() > 0 for p in wanted), options.start_timeout_s):
            raise RuntimeError("the node's subscriptions never appeared")
        # Warm-up until the map is loaded and a first frame was answered (not counted).
        stamp0, parts0 = frames.frames[0]
        started = time.perf_counter()
        while time.perf_counter() - started < options.start_timeout_s:
            probe = SentFrame(-1, stamp0, "probe", time.perf_counter())
            latest[stamp0] = probe
            for topic in (frames.info_topic, frames.depth_topic, frames.image_topic):
                if topic in parts0 and (topic != frames.depth_topic or options.use_depth):
                    publishers[topic].publish(parts0[topic])
            if spin_until(lambda: probe.status is not None and probe.status.state_name in ("OK", "LOST"), 2.0):
                break
        else:
            raise RuntimeError("the node never answered a frame (map not loaded?)")

        period_s = 1.0 / options.rate_hz
        next_s = time.perf_counter()
        map_index = 0
        info_restore = False
        for index in range(options.frames):
            stamp, parts = frames.frames[index % len(frames.frames)]
            kind = kinds[index]
            if options.swap_every and index and index % options.swap_every == 0:
                map_index = 1 - map_index
                value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=maps[map_index])
                future = set_parameters.call_async(SetParameters.Request(
                    parameters=[ParameterMsg(name="map_path", value=value)]))
                swaps.append({"at_frame": index, "map_path": maps[map_index], "future": future})
            info_cdr, image_cdr = parts[frames.info_topic], parts[frames.image_topic]
            depth_cdr = parts.get(frames.depth_topic) if options.use_depth else None
            if kind != "good":
                image, info, depth = _corrupt(kind, deserialize_message(image_cdr, Image),
                                              deserialize_message(info_cdr, CameraInfo),
                                              deserialize_message(depth_cdr, Image) if depth_cdr else None)
                info_out, image_out, depth_out = info, image, depth
            else:
                info_out, image_out, depth_out = info_cdr, image_cdr, depth_cdr
            camera_info_fault = kind in ("zero_intrinsics", "camera_info_size")
            publishers[frames.info_topic].publish(info_out)
            if camera_info_fault or info_restore:
                spin_for(options.camera_info_settle_s)
            info_restore = camera_info_fault
            if depth_out is not None:
                publishers[frames.depth_topic].publish(depth_out)
            frame = SentFrame(index, stamp, kind, time.perf_counter())
            latest[stamp] = frame
            sent.append(frame)
            publishers[frames.image_topic].publish(image_out)
            if camera_info_fault or options.lockstep:
                # The bad CameraInfo must stay until this frame is answered (or given up on).
                spin_until(lambda: frame.status is not None, options.answer_wait_s if options.lockstep else 2.0)
            next_s += period_s
            spin_for(max(0.0, next_s - time.perf_counter()))
            if time.perf_counter() - next_s > 1.0:
                next_s = time.perf_counter()  # behind by more than a second: do not burst to catch up
            if index % 30 == 0:
                rss = _rss_mb(process.pid)
                if rss is not None:
                    rss_samples.append((index, rss))
            if process.poll() is not None:
                break
            if progress is not None and index % 1000 == 0:
                progress(f"soak: {index}/{options.frames} frames")
        spin_until(lambda: all(f.status is not None for f in sent[-3:]), options.answer_wait_s)
        spin_for(0.5)
        alive = process.poll() is None
        rss = _rss_mb(process.pid)
        if rss is not None:
            rss_samples.append((len(sent), rss))
        result.update(_summarise(sent, frames.truth, rss_samples, swaps, statuses_other, options, maps))
        result["node_alive_at_end"] = alive
    finally:
        executor.shutdown()
        driver.destroy_node()
        rclpy.shutdown(context=context)
        if process.poll() is None:
            process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        log_lines = (output or "").splitlines()
        shutil.rmtree(workdir, ignore_errors=True)
    result["node_exit_code"] = process.returncode
    result["node_log_tail"] = log_lines[-20:]
    result["node_log_lines"] = len(log_lines)
    result["tracebacks_in_node_log"] = sum("Traceback" in line for line in log_lines)
    return result


def _summarise(sent, truth, rss_samples, swaps, statuses_other, options, maps) -> dict[str, Any]:
    from dsac_ros.geometry import pose_errors

    by_kind: dict[str, dict[str, Any]] = {}
    for frame in sent:
        row = by_kind.setdefault(frame.kind, {"sent": 0, "answered": 0, "published": 0, "states": {}})
        row["sent"] += 1
        if frame.status is not None:
            row["answered"] += 1
            name = frame.status.state_name
            row["states"][name] = row["states"].get(name, 0) + 1
        row["published"] += int(frame.posed)
    # Faults: answered ones must be BAD_INPUT with the fault's reason, and none published.
    for kind, row in by_kind.items():
        if kind == "good":
            continue
        answered = [f for f in sent if f.kind == kind and f.status is not None]
        row["bad_input_with_reason"] = sum(f.status.state_name == "BAD_INPUT" and FAULT_REASONS[kind] in f.status.reason
                                           for f in answered)
        row["example_reasons"] = sorted({f.status.reason for f in answered})[:3]
    good = [f for f in sent if f.kind == "good"]
    if good:
        by_kind["good"]["example_reasons"] = sorted({f.status.reason for f in good if f.status is not None
                                                     and f.status.state_name != "OK"})[:3]
    errors = []
    for frame in good:
        if frame.posed and truth.get(frame.stamp_ns) is not None:
            errors.append(pose_errors(frame.pose, truth[frame.stamp_ns]))
    errors = np.asarray(errors, dtype=np.float64).reshape(-1, 2)
    within = int(np.sum((errors[:, 0] < 0.05) & (errors[:, 1] < 5.0))) if errors.size else 0
    if good:
        by_kind["good"]["pct_published"] = 100.0 * by_kind["good"]["published"] / len(good)
        by_kind["good"]["pct_within_5cm_5deg"] = 100.0 * within / len(good)
        by_kind["good"]["median_error_cm"] = float(np.median(errors[:, 0]) * 100) if errors.size else None
    latency_ms = [(f.status_s - f.sent_s) * 1e3 for f in sent if f.status_s is not None]
    states_by_kind = {f.index: f.status.state_name for f in sent if f.status is not None}
    lost_latency = [(f.status_s - f.sent_s) * 1e3 for f in sent
                    if f.status_s is not None and states_by_kind.get(f.index) == "LOST"]
    rss = np.asarray([mb for frames_sent, mb in rss_samples if frames_sent >= options.warmup_frames])
    rss_result: dict[str, Any] = {"samples": len(rss_samples)}
    if rss.size >= 2:
        head, tail = rss[: max(1, min(5, rss.size // 4))], rss[-max(1, min(5, rss.size // 4)):]
        rss_result.update({"after_warmup_mb": float(head.mean()), "final_mb": float(tail.mean()),
                           "max_mb": float(rss.max()), "growth_mb": float(tail.mean() - head.mean())})
    swap_result = None
    if swaps:
        accepted = sum(bool(s["future"].done() and s["future"].result() is not None
                            and all(r.successful for r in s["future"].result().results)) for s in swaps)
        ok_paths = [f.status.map_path for f in sent if f.status is not None and f.status.state_name == "OK"]
        changes = sum(1 for a, b in zip(ok_paths, ok_paths[1:]) if a != b)
        loading = sum(1 for s in statuses_other + [f.status for f in sent if f.status is not None]
                      if s.state_name == "NO_MODEL" and s.reason.startswith("loading map"))
        swap_result = {"requested": len(swaps), "accepted": accepted, "loading_statuses": loading,
                       "ok_map_path_changes": changes,
                       "ok_with_unknown_map": sum(1 for p in ok_paths if p not in maps),
                       "frames_answered_no_model": sum(1 for f in sent if f.status is not None
                                                       and f.status.state_name == "NO_MODEL")}
    last = next((f.status for f in reversed(sent) if f.status is not None), None)
    return {
        "frames_sent": len(sent),
        "frames_answered": sum(f.status is not None for f in sent),
        "frames_unanswered": sum(f.status is None for f in sent),
        "node_frames_dropped": int(last.frames_dropped) if last is not None else None,
        "by_kind": by_kind,
        "latency_publish_to_status_ms": _percentiles(latency_ms),
        "node_total_ms": _percentiles([f.status.total_ms for f in sent if f.status is not None]),
        "latency_lost_frames_ms": _percentiles(lost_latency),
        "rss": rss_result,
        "swaps": swap_result,
    }


__all__ = ["FAULTS_DEPTH", "FAULTS_RGB", "FAULT_REASONS", "SoakOptions", "fault_schedule", "run_soak",
           "tiny_scene_bag"]
