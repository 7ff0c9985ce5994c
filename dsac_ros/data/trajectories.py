"""Camera paths like a hand-held or robot-mounted camera, and how close test views are to mapping views.

The paths follow a closed *route* (an ellipse through the free middle of a room) while the camera
looks into the room: its heading swings around the inward direction, its height, pitch and roll
wander smoothly. Mapping sequences go round the route several times with different lateral offsets,
heights and heading biases, so they cover a band of viewpoints; a test sequence is one more pass
with its own smooth deviations, speed changes and start point. Test frames are therefore new
viewpoints, never copies of mapping frames, yet they stay within relocalisation reach of the
mapping views, as in 7-Scenes where test sequences revisit the places the training sequences
covered. ``nearest_mapping_distance`` measures exactly that.

All poses are ``world_T_cam`` (4, 4), world z up, camera optical frame (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsac_ros.geometry import rotation_angle_deg


@dataclass(frozen=True)
class Route:
    """A closed loop through a room's free space and how the camera looks around while on it.

    centre_xy_m, semi_axes_m: the ellipse the camera centre follows (before offsets).
    height_m: mean camera height above the floor.
    look_height_m: height of the point the camera looks towards (below eye level: looking slightly down).
    yaw_swing_deg, yaw_swing_cycles: the heading swings this far around "towards the room centre",
        this many times per loop, so the camera looks across the room and along the walls in turn.
    """

    centre_xy_m: tuple[float, float]
    semi_axes_m: tuple[float, float]
    height_m: float = 1.35
    look_height_m: float = 1.0
    yaw_swing_deg: float = 35.0
    yaw_swing_cycles: int = 2


@dataclass(frozen=True)
class PassStyle:
    """How one pass round the route deviates from it (all deviations smooth and periodic)."""

    lateral_m: float = 0.0          # constant outward offset from the ellipse
    height_m: float = 0.0           # constant height offset
    yaw_deg: float = 0.0            # constant heading bias
    lateral_noise_m: float = 0.05   # amplitudes of smooth random deviations
    height_noise_m: float = 0.05
    yaw_noise_deg: float = 5.0
    pitch_noise_deg: float = 4.0
    roll_noise_deg: float = 2.0
    speed_variation: float = 0.02   # how unevenly the pass moves along the loop (fraction of a loop)
    start_s: float = 0.0            # where on the loop the pass starts (0..1)


def smooth_periodic_noise(rng: np.random.Generator, s: np.ndarray, amplitude: float,
                          harmonics: int = 4) -> np.ndarray:
    """(N,) smooth noise over loop positions s (1-periodic), roughly within +-amplitude."""
    noise = np.zeros_like(s, dtype=np.float64)
    weights = 1.0 / np.arange(1, harmonics + 1)
    weights /= weights.sum()
    for k, weight in zip(range(1, harmonics + 1), weights):
        phase = rng.uniform(0, 2 * np.pi)
        noise += weight * np.sin(2 * np.pi * k * s + phase)
    return amplitude * noise


def look_rotation(forward_world: np.ndarray, roll_rad: np.ndarray | float = 0.0) -> np.ndarray:
    """(N, 3) viewing directions (world, z up) and roll -> (N, 3, 3) world_R_cam (optical frame).

    The camera's x axis is horizontal (to the right) before the roll; its y axis points down.
    """
    forward = np.asarray(forward_world, np.float64).reshape(-1, 3)
    forward = forward / np.linalg.norm(forward, axis=1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)
    roll = np.broadcast_to(np.asarray(roll_rad, np.float64), (len(forward),))
    cos_r, sin_r = np.cos(roll)[:, None], np.sin(roll)[:, None]
    x_axis = cos_r * right + sin_r * down
    y_axis = -sin_r * right + cos_r * down
    return np.stack([x_axis, y_axis, forward], axis=2)


def route_poses(route: Route, style: PassStyle, n_frames: int, seed: int) -> np.ndarray:
    """One pass round the route -> (n_frames, 4, 4) world_T_cam."""
    rng = np.random.default_rng([0x7AA, seed])
    t = np.arange(n_frames) / n_frames
    s = style.start_s + t + smooth_periodic_noise(rng, t, style.speed_variation, 3)
    theta = 2 * np.pi * s
    a, b = route.semi_axes_m
    outward = np.stack([np.cos(theta) / a, np.sin(theta) / b], axis=1)
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    lateral = style.lateral_m + smooth_periodic_noise(rng, s, style.lateral_noise_m)
    xy = np.asarray(route.centre_xy_m) + np.stack([a * np.cos(theta), b * np.sin(theta)], axis=1)
    xy += lateral[:, None] * outward
    height = route.height_m + style.height_m + smooth_periodic_noise(rng, s, style.height_noise_m)

    # Heading: towards the room centre, swinging left and right as the route goes on.
    inward_yaw = np.arctan2(-outward[:, 1], -outward[:, 0])
    swing = np.radians(route.yaw_swing_deg) * np.sin(2 * np.pi * route.yaw_swing_cycles * s)
    yaw = inward_yaw + swing + np.radians(style.yaw_deg) + np.radians(
        smooth_periodic_noise(rng, s, style.yaw_noise_deg))
    # Pitch: towards look_height at about the distance of the opposite side of the route.
    reach_m = np.hypot(a, b)
    pitch = np.arctan2(route.look_height_m - height, reach_m) + np.radians(
        smooth_periodic_noise(rng, s, style.pitch_noise_deg))
    roll = np.radians(smooth_periodic_noise(rng, s, style.roll_noise_deg))
    forward = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=1)

    poses = np.tile(np.eye(4), (n_frames, 1, 1))
    poses[:, :3, :3] = look_rotation(forward, roll)
    poses[:, :2, 3] = xy
    poses[:, 2, 3] = height
    return poses


# Mapping: passes spread over a band around the route; test: one pass inside that band.
MAPPING_STYLES: tuple[PassStyle, ...] = (
    PassStyle(lateral_m=0.0, height_m=0.0, yaw_deg=0.0, start_s=0.0),
    PassStyle(lateral_m=-0.18, height_m=0.15, yaw_deg=-15.0, start_s=0.31),
    PassStyle(lateral_m=0.18, height_m=-0.15, yaw_deg=15.0, start_s=0.62),
    PassStyle(lateral_m=0.08, height_m=0.25, yaw_deg=-8.0, start_s=0.17),
    PassStyle(lateral_m=-0.08, height_m=-0.25, yaw_deg=8.0, start_s=0.83),
)
TEST_STYLE = PassStyle(lateral_noise_m=0.3, height_noise_m=0.25, yaw_noise_deg=20.0, pitch_noise_deg=6.0,
                       roll_noise_deg=3.0, speed_variation=0.04, start_s=0.5)


def pass_lengths(n_frames: int, passes: int) -> list[int]:
    """Frames per pass when ``n_frames`` are split into ``passes`` loops (earlier passes get the rest)."""
    return [n_frames // passes + (1 if i < n_frames % passes else 0) for i in range(passes)]


def mapping_trajectory(route: Route, n_frames: int, passes: int, seed: int) -> np.ndarray:
    """(n_frames, 4, 4) mapping poses: ``passes`` loops round the route (1..5), one after another.

    Each loop is a separate recording, like 7-Scenes' training sequences: the camera jumps between
    the end of one loop and the start of the next (scene stamps leave a gap there).
    """
    if not 1 <= passes <= len(MAPPING_STYLES):
        raise ValueError(f"passes must be 1..{len(MAPPING_STYLES)}, got {passes}")
    counts = pass_lengths(n_frames, passes)
    return np.concatenate([route_poses(route, MAPPING_STYLES[i], counts[i], seed * 16 + i)
                           for i in range(passes)], axis=0)


def test_trajectory(route: Route, n_frames: int, seed: int) -> np.ndarray:
    """(n_frames, 4, 4) test poses: one loop with its own deviations, never a mapping frame."""
    return route_poses(route, TEST_STYLE, n_frames, seed * 16 + 15)


# --------------------------------------------------------------------------------------------------
# how far test views are from mapping views


def nearest_mapping_distance(mapping_poses: np.ndarray, test_poses: np.ndarray,
                             metres_per_degree: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """For each test frame, the distance (m) and view angle (deg) to its nearest mapping frame.

    mapping_poses: (M, 4, 4), test_poses: (T, 4, 4) world_T_cam.
    "Nearest" minimises distance_m + metres_per_degree * angle_deg (default: 10 deg weigh like
    0.1 m), so a frame at the same place looking the other way does not count as near.
    The angle is the full relative rotation angle between the two cameras.
    Returns (T,) distances in metres and (T,) angles in degrees.
    """
    mapping_poses = np.asarray(mapping_poses, np.float64)
    test_poses = np.asarray(test_poses, np.float64)
    distance = np.linalg.norm(test_poses[:, None, :3, 3] - mapping_poses[None, :, :3, 3], axis=-1)
    relative = np.einsum("tji,mjk->tmik", test_poses[:, :3, :3], mapping_poses[:, :3, :3])
    angle = rotation_angle_deg(relative)
    nearest = np.argmin(distance + metres_per_degree * angle, axis=1)
    rows = np.arange(len(test_poses))
    return distance[rows, nearest], angle[rows, nearest]


def proximity_summary(mapping_poses: np.ndarray, test_poses: np.ndarray) -> dict:
    """Median and 90th percentile of ``nearest_mapping_distance``, as a dict for benchmarks."""
    distance_m, angle_deg = nearest_mapping_distance(mapping_poses, test_poses)
    return {
        "median_distance_m": float(np.median(distance_m)),
        "p90_distance_m": float(np.percentile(distance_m, 90)),
        "median_angle_deg": float(np.median(angle_deg)),
        "p90_angle_deg": float(np.percentile(angle_deg, 90)),
    }


def random_views(scene, n_frames: int, seed: int, min_clearance_m: float = 0.3,
                 height_range_m: tuple[float, float] = (0.8, 1.9)) -> np.ndarray:
    """(n_frames, 4, 4) independent random views inside a scene (for encoder pretraining).

    Positions are drawn uniformly in the room with at least ``min_clearance_m`` to any surface;
    the camera looks roughly horizontally (pitch -35..+15 deg, roll +-8 deg) in any heading.
    """
    rng = np.random.default_rng([0x71E, seed])
    lo = scene.room_min_m + min_clearance_m
    hi = scene.room_max_m - min_clearance_m
    positions = []
    for _ in range(100):
        if len(positions) >= n_frames:
            break
        candidates = rng.uniform(lo, hi, size=(4 * n_frames, 3))
        candidates[:, 2] = rng.uniform(*height_range_m, size=len(candidates)).clip(lo[2], hi[2])
        keep = candidates[scene.clearance_m(candidates) >= min_clearance_m]
        positions.extend(keep[: n_frames - len(positions)])
    if len(positions) < n_frames:
        raise ValueError(f"scene {scene.name} has too little free space for views with {min_clearance_m} m clearance")
    positions = np.asarray(positions)
    yaw = rng.uniform(-np.pi, np.pi, n_frames)
    pitch = np.radians(rng.uniform(-35, 15, n_frames))
    roll = np.radians(rng.uniform(-8, 8, n_frames))
    forward = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=1)
    poses = np.tile(np.eye(4), (n_frames, 1, 1))
    poses[:, :3, :3] = look_rotation(forward, roll)
    poses[:, :3, 3] = positions
    return poses
