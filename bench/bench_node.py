#!/usr/bin/env python3
"""Benchmark of the localizer node over real DDS: latency and CPU share.

The node runs in its own process (`dsac_ros.ros.node:main`, as `ros2 run` starts it); this
process publishes rendered 640 x 480 frames of the tiny scene with their CameraInfo.

- latency: one frame at a time, wall time from `publish(image)` to the receipt of its
  `~/pose` (and of its `~/status`, which also covers frames that ended LOST); median and p95;
- CPU share: frames at each of `--rates` (default 10 and 30 Hz) for `--cpu-seconds`; the node
  process's user + system CPU time (from /proc) over the wall time, in percent of one core (this
  machine has `os.cpu_count()`), with the frames it answered and dropped.

`--scene small_room` (or large_room) sends that scene's 640 x 480 test frames to the node with
the scene's memory map (made once, as `dsac-ros bench frame` makes it, with `--encoder`'s
encoder); `--backend` sets the node's encoder backend and `--param NAME=VALUE` any other node
parameter (e.g. `retrieve_frames=3`). Without `--scene`: the tiny scene and the tests' cached tiny map.

Run with the workspace sourced: scripts/ros_env.sh .venv/bin/python bench/bench_node.py
JSON goes to bench/results/node.json, and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from dsac_ros.data.images import encode_image
from dsac_ros.data.scenes import get_scene
from dsac_ros.msg import LocalizationStatus
from dsac_ros.ros.conversions import ns_to_stamp, stamp_to_ns
from dsac_ros.benchmarks.dds import FASTDDS_LARGE_MESSAGES_XML
from dsac_ros.ros.node import sensor_qos

NAMESPACE = "/bench"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its finished children), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def default_map_path() -> Path:
    from dsac_ros.benchmarks.tiny_map import build_tiny_map  # the test suite's cached map of the tiny scene

    return Path(build_tiny_map())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", type=Path, default=None, help="map file (default: the tests' cached tiny map)")
    parser.add_argument("--fastdds-profile", default="large",
                        help="Fast DDS XML profile for both processes: 'large' (built in: 16 MB shared memory "
                             "segment, 4 MB socket buffers), 'none' (middleware defaults) or a file path")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames for the latency measurement (default: with --scene every test frame, the "
                             "frames `dsac-ros bench frame` times offline; else 30)")
    parser.add_argument("--cpu-seconds", type=float, default=10.0, help="duration of each fixed-rate run")
    parser.add_argument("--rates", default="10,30", help="comma-separated input rates of the CPU runs, Hz")
    parser.add_argument("--scene", default=None, help="a standard scene (small_room, large_room): its test frames "
                                                      "and memory map")
    parser.add_argument("--use-depth", action="store_true",
                        help="RGB-D: publish each frame's depth (32FC1) before its image; the node runs with use_depth")
    parser.add_argument("--encoder", default=None, metavar="NAME|FILE",
                        help="with --scene: the encoder its map is made with (shipped, lean or a file; default shipped)")
    parser.add_argument("--backend", default="auto", help="the node's encoder backend (auto, torch, onnxruntime)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a node parameter, as ros2 run's -p NAME:=VALUE (repeatable; e.g. retrieve_frames=3)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "node.json")
    args = parser.parse_args()
    parameters = []
    for assignment in args.param:
        name, separator, value = assignment.partition("=")
        if not name or not separator:
            parser.error(f"--param needs NAME=VALUE, got {assignment!r}")
        parameters.append((name, value))
    if args.scene:
        from dsac_ros.benchmarks.cameras import scene_bags
        from dsac_ros.benchmarks.frame import scene_map
        from dsac_ros.data import read_frames

        map_path = args.map or scene_map(args.scene, args.device, encoder=args.encoder)
        frames = list(read_frames(scene_bags(args.scene)["test"]))
        args.width, args.height = frames[0].intrinsics.width_px, frames[0].intrinsics.height_px
    else:
        map_path = args.map or default_map_path()
        # The frames the test map was fitted on, rendered at the benchmark size: they localise, so
        # every frame yields a pose (the map is small; its accuracy is not what is measured here).
        from dsac_ros.benchmarks.tiny_map import FIT_STRIDE

        scene = get_scene("tiny")
        frames = list(scene.render_frames("mapping", width_px=args.width, height_px=args.height, stride=FIT_STRIDE))
    if args.frames is None:
        args.frames = len(frames) if args.scene else 30
    intrinsics = frames[0].intrinsics
    encoded = []
    for frame in frames:
        step, data = encode_image(frame.image_rgb, "rgb8")
        encoded.append((step, data))
    depth_encoded = [encode_image(frame.depth_m.astype(np.float32), "32FC1") for frame in frames] if args.use_depth else []

    node_cmd = [sys.executable, "-c", "import sys; from dsac_ros.ros.node import main; sys.exit(main())",
                "--ros-args", "-r", f"__ns:={NAMESPACE}", "-p", f"map_path:={map_path}", "-p", f"device:={args.device}",
                "-p", f"backend:={args.backend}", "-p", f"use_depth:={'true' if args.use_depth else 'false'}",
                "-p", "tf_mode:=map_to_camera", "-p", "min_inliers:=20"]
    for name, value in parameters:
        node_cmd += ["-p", f"{name}:={value}"]
    node_cmd += ["--log-level", "warn"]
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{os.environ.get('PYTHONPATH', '')}")
    if args.fastdds_profile == "large":
        profile = Path(tempfile.mkdtemp(prefix="bench_node_")) / "fastdds_large_messages.xml"
        profile.write_text(FASTDDS_LARGE_MESSAGES_XML)
        args.fastdds_profile = profile
    if args.fastdds_profile != "none":
        # Both processes: the variable must be set before this process's rclpy.init.
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(args.fastdds_profile)
    node_process = subprocess.Popen(node_cmd, env=env)

    rclpy.init()
    driver = rclpy.create_node("bench_driver")
    executor = SingleThreadedExecutor()
    executor.add_node(driver)
    received_pose: dict[int, float] = {}
    received_status: dict[int, tuple[float, LocalizationStatus]] = {}
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    driver.create_subscription(PoseStamped, f"{NAMESPACE}/localizer/pose",
                               lambda m: received_pose.setdefault(stamp_to_ns(m.header.stamp), time.perf_counter()),
                               reliable)
    driver.create_subscription(LocalizationStatus, f"{NAMESPACE}/localizer/status",
                               lambda m: received_status.setdefault(stamp_to_ns(m.header.stamp),
                                                                    (time.perf_counter(), m)), reliable)
    image_pub = driver.create_publisher(Image, f"{NAMESPACE}/image", sensor_qos())
    depth_pub = driver.create_publisher(Image, f"{NAMESPACE}/depth", sensor_qos())
    info_pub = driver.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info", sensor_qos())
    info = CameraInfo(width=intrinsics.width_px, height=intrinsics.height_px, distortion_model="plumb_bob")
    info.k = [float(v) for v in intrinsics.K.reshape(9)]
    info.d = [0.0] * 5

    def spin_until(condition, timeout_s):
        # spin_once returns as soon as a message arrives, so waiting up to the deadline costs no CPU:
        # with a 5 ms poll instead this process took 12 % of a core from the node's 2 (measured).
        deadline = time.monotonic() + timeout_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            executor.spin_once(timeout_sec=min(remaining, 0.5))
        return condition()

    def spin_until_time(wake_perf_s):
        """Handle messages until perf_counter() reaches wake_perf_s (the next send of a fixed rate)."""
        while (remaining := wake_perf_s - time.perf_counter()) > 0:
            executor.spin_once(timeout_sec=remaining)

    def image_msg(index: int, stamp_ns: int) -> Image:
        if depth_encoded:  # the depth of a stamp goes first: the node pairs it with the image by stamp
            step, data = depth_encoded[index % len(depth_encoded)]
            depth = Image(encoding="32FC1", height=intrinsics.height_px, width=intrinsics.width_px, step=step)
            depth.header.stamp, depth.header.frame_id = ns_to_stamp(stamp_ns), "camera_optical"
            depth.data = data
            depth_pub.publish(depth)
        step, data = encoded[index % len(encoded)]
        msg = Image(encoding="rgb8", height=intrinsics.height_px, width=intrinsics.width_px, step=step)
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), "camera_optical"
        msg.data = data
        return msg

    result: dict = {}
    try:
        if not spin_until(lambda: image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0
                          and (not args.use_depth or depth_pub.get_subscription_count() > 0), 60):
            raise RuntimeError("the node's subscriptions did not appear")
        stamp_ns = 1_000 * 1_000_000_000

        def next_stamp() -> int:
            nonlocal stamp_ns
            stamp_ns += 1_000_000  # 1 ms apart, always forward
            return stamp_ns

        # Warm-up: CameraInfo in, map loaded, first forward pass done.
        for _ in range(100):
            info_pub.publish(info)
            stamp = next_stamp()
            image_pub.publish(image_msg(0, stamp))
            if spin_until(lambda: stamp in received_status
                          and received_status[stamp][1].state_name in ("OK", "LOST"), 5.0):
                break
            answer = received_status.get(stamp)
            print("warm-up: no answer yet (" + (f"{answer[1].state_name}: {answer[1].reason}" if answer else "no status")
                  + ")", file=sys.stderr)
        else:
            raise RuntimeError("the node never localised a warm-up frame")

        pose_latency_ms, status_latency_ms, node_total_ms, network_ms, ransac_ms = [], [], [], [], []
        # Both processes' CPU over the latency part: the two share the machine's cores.
        latency_cpu_before = (process_cpu_seconds(node_process.pid), process_cpu_seconds(os.getpid()))
        latency_wall_start = time.perf_counter()
        for index in range(args.frames):
            stamp = next_stamp()
            msg = image_msg(index, stamp)
            sent = time.perf_counter()
            image_pub.publish(msg)
            if not spin_until(lambda: stamp in received_status, 10.0):
                print(f"frame {index}: no status (lost in transport?)", file=sys.stderr)
                continue  # lost in transport (best effort): counted below
            spin_until(lambda: stamp in received_pose, 0.5)
            status_time, status = received_status[stamp]
            status_latency_ms.append((status_time - sent) * 1e3)
            node_total_ms.append(status.total_ms)
            network_ms.append(status.network_ms)
            ransac_ms.append(status.ransac_ms)
            if stamp in received_pose:
                pose_latency_ms.append((received_pose[stamp] - sent) * 1e3)

        latency_wall_s = time.perf_counter() - latency_wall_start
        latency_cpu = {"node_percent_of_one_core": 100.0 * (process_cpu_seconds(node_process.pid)
                                                             - latency_cpu_before[0]) / latency_wall_s,
                       "driver_percent_of_one_core": 100.0 * (process_cpu_seconds(os.getpid())
                                                               - latency_cpu_before[1]) / latency_wall_s}
        # CPU share at steady input rates.
        cpu_runs = []
        last_backend = ""
        for rate_hz in [float(r) for r in args.rates.split(",") if r]:
            period = 1.0 / rate_hz
            dropped_before = max((m.frames_dropped for _, m in received_status.values()), default=0)
            cpu_before = process_cpu_seconds(node_process.pid)
            wall_start = time.perf_counter()
            sent_stamps = []
            next_time = wall_start
            while time.perf_counter() - wall_start < args.cpu_seconds:
                stamp = next_stamp()
                image_pub.publish(image_msg(len(sent_stamps), stamp))
                sent_stamps.append(stamp)
                next_time += period
                spin_until_time(next_time)
            wall_s = time.perf_counter() - wall_start
            cpu_s = process_cpu_seconds(node_process.pid) - cpu_before
            spin_until(lambda: sent_stamps[-1] in received_status, 5.0)
            processed = sum(1 for s in sent_stamps if s in received_status)
            last_status = max((received_status[s] for s in sent_stamps if s in received_status),
                              key=lambda item: stamp_to_ns(item[1].header.stamp), default=(0, None))[1]
            last_backend = last_status.backend if last_status is not None else last_backend
            cpu_runs.append({
                "input_rate_hz": rate_hz, "seconds": wall_s, "frames_sent": len(sent_stamps),
                "frames_answered": processed,
                "frames_dropped_reported": (int(last_status.frames_dropped) - int(dropped_before))
                if last_status is not None else None,
                "node_cpu_percent_of_one_core": 100.0 * cpu_s / wall_s,
                "cpu_cores": os.cpu_count(),
            })

        def stats(values):
            return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
                    "count": len(values)} if values else {"median": None, "p95": None, "count": 0}

        result = {
            "image_size_px": [args.width, args.height],
            "device": args.device,
            "backend": last_backend,
            "scene": args.scene or "tiny",
            "use_depth": bool(args.use_depth),
            "map": str(map_path),
            "encoder": (args.encoder or "shipped") if args.map is None else "the --map file's",
            "parameters": list(args.param),
            "frames_sent": args.frames,
            "latency_publish_to_pose_ms": stats(pose_latency_ms),
            "latency_publish_to_status_ms": stats(status_latency_ms),
            "node_total_ms": stats(node_total_ms),
            "node_network_ms": stats(network_ms),
            "node_ransac_ms": stats(ransac_ms),
            "fastdds_profile": str(args.fastdds_profile),
            "load_average_1min": os.getloadavg()[0],
            "latency_run_cpu": latency_cpu,
            "cpu_runs": cpu_runs,
        }
    finally:
        executor.shutdown()
        driver.destroy_node()
        rclpy.shutdown()
        node_process.terminate()
        try:
            node_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node_process.kill()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    pose, status = result["latency_publish_to_pose_ms"], result["latency_publish_to_status_ms"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"localizer node, {result['scene']} {args.width}x{args.height}, device {args.device}, "
          f"backend {result['backend']}")
    print(f"{'measure':<36}{'median':>10}{'p95':>10}{'n':>6}")
    print(f"{'publish -> pose (ms)':<36}{fmt(pose['median']):>10}{fmt(pose['p95']):>10}{pose['count']:>6}")
    print(f"{'publish -> status (ms)':<36}{fmt(status['median']):>10}{fmt(status['p95']):>10}{status['count']:>6}")
    for key, label in (("node_total_ms", "node total_ms (status field)"), ("node_network_ms", "  of which network"),
                       ("node_ransac_ms", "  of which ransac")):
        row = result[key]
        print(f"{label:<36}{fmt(row['median']):>10}{fmt(row['p95']):>10}{row['count']:>6}")
    print(f"during the latency frames: node CPU {result['latency_run_cpu']['node_percent_of_one_core']:.0f}%, "
          f"this driver {result['latency_run_cpu']['driver_percent_of_one_core']:.0f}% of one core")
    for cpu in result["cpu_runs"]:
        print(f"{cpu['input_rate_hz']:g} Hz input for {cpu['seconds']:.1f} s: node CPU "
              f"{cpu['node_cpu_percent_of_one_core']:.0f}% of one core ({cpu['cpu_cores']} cores), "
              f"{cpu['frames_answered']}/{cpu['frames_sent']} frames answered, {cpu['frames_dropped_reported']} "
              f"dropped (node count)")
    print(f"load average (1 min) at the end: {result['load_average_1min']:.1f}")
    print(f"JSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
