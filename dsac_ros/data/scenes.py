"""Named standard scenes (the data every benchmark and test names) and random scenes for pretraining.

Standard scenes, in the order ``list_scenes()`` gives them:

| name | room (m) | mapping frames | test frames | character |
|---|---|---|---|---|
| ``small_room`` | 4.2 x 3.4 x 2.6 | 300 (3 loops) | 150 | posters, furniture, plain walls: the demo scene |
| ``large_room`` | 8.0 x 6.0 x 3.0 | 480 (4 loops) | 200 | brick walls, tiled floor, rows of identical crates |
| ``small_room_long`` | small_room | 4,000 (5 loops, 30 Hz) | 150 | a 7-Scenes-length recording (benchmarks only) |
| ``tiny`` | small_room | 24 (2 loops) | 8 | 160 x 120 default size: fast tests of other modules |
| ``*_distorted`` | as above | as above | as above | small_room, large_room and tiny through a wide-angle lens |
| ``*_sensor`` | as above | as above | as above | the same as a Kinect-like camera records them (noise, blur, depth holes) |

Frames are rendered at 640 x 480 by default (fx = fy = 525 px, principal point at the centre; the
intrinsics are rescaled with ``Intrinsics.resized`` for other sizes), stamped at 10 Hz (the long
recording at 30 Hz: five slower loops, 27 s each). Mapping
splits are several passes (loops) recorded one after another with a 2 s pause between them; the
camera jumps between passes, as between 7-Scenes' separate sequences.

``random_scene(seed)`` makes a procedurally varied room for encoder pretraining; its random streams
are keyed apart from the standard scenes', so no random scene reproduces a standard one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np

from dsac_ros.camera import CameraModel, Intrinsics
from dsac_ros.data import textures as tx
from dsac_ros.data.render import Lighting, Scene, SceneBuilder, render
from dsac_ros.data.sensor import SENSOR_MAPPING, SENSOR_TEST
from dsac_ros.data.trajectories import (Route, mapping_trajectory, pass_lengths, proximity_summary,
                                        random_views, test_trajectory)
from dsac_ros.frame import Frame

BASE_INTRINSICS = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
FRAME_PERIOD_NS = 100_000_000  # 10 Hz
PASS_GAP_NS = 2_000_000_000  # pause between mapping passes (separate recordings, like 7-Scenes sequences)
# Mapping and test recordings start at different times, like separate recording sessions.
SPLIT_START_NS = {"mapping": 1_700_000_000 * 10**9, "test": 1_700_003_600 * 10**9}
SPLITS = ("mapping", "test")


@dataclass(frozen=True)
class SceneSpec:
    """A named scene with its mapping and test sequences."""

    name: str
    description: str
    build: Callable[[], Scene]
    route: Route
    mapping_frames: int
    mapping_passes: int
    test_frames: int
    seed: int
    default_size_px: tuple[int, int] = (640, 480)
    frame_period_ns: int = FRAME_PERIOD_NS
    # Lens distortion (CameraInfo's model name and coefficients, on normalised coordinates, so
    # valid at every image size); () = a pinhole camera.
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = ()
    # Sensor effects per split (dsac_ros.data.sensor.SensorEffects); {} = the perfect render.
    sensor: tuple = ()  # ((split, SensorEffects), ...)

    def scene(self) -> Scene:
        return _built_scene(self.name)

    def intrinsics(self, width_px: int | None = None, height_px: int | None = None) -> Intrinsics:
        width_px = width_px or self.default_size_px[0]
        height_px = height_px or self.default_size_px[1]
        if (width_px, height_px) == (640, 480):
            return BASE_INTRINSICS
        return BASE_INTRINSICS.resized(width_px, height_px)

    def poses(self, split: str = "mapping") -> np.ndarray:
        """(N, 4, 4) world_T_cam of a split ('mapping' or 'test')."""
        if split == "mapping":
            return mapping_trajectory(self.route, self.mapping_frames, self.mapping_passes, self.seed)
        if split == "test":
            return test_trajectory(self.route, self.test_frames, self.seed)
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")

    def num_frames(self, split: str = "mapping", stride: int = 1) -> int:
        total = self.mapping_frames if split == "mapping" else self.test_frames
        return len(range(0, total, stride))

    def stamps_ns(self, split: str = "mapping") -> np.ndarray:
        """(N,) int64 stamps: 10 Hz within a pass, a PASS_GAP_NS pause between mapping passes."""
        if split == "mapping":
            pass_index = np.repeat(np.arange(self.mapping_passes),
                                   pass_lengths(self.mapping_frames, self.mapping_passes))
        else:
            pass_index = np.zeros(self.test_frames, dtype=np.int64)
        frame_index = np.arange(len(pass_index), dtype=np.int64)
        return SPLIT_START_NS[split] + self.frame_period_ns * frame_index + PASS_GAP_NS * pass_index.astype(np.int64)

    def pass_index(self, split: str = "mapping") -> np.ndarray:
        """(N,) which pass (loop) each frame of a split belongs to."""
        if split == "test":
            return np.zeros(self.test_frames, dtype=np.int64)
        return np.repeat(np.arange(self.mapping_passes), pass_lengths(self.mapping_frames, self.mapping_passes))

    def sensor_effects(self, split: str):
        """The split's SensorEffects, or None for a perfect render."""
        return dict(self.sensor).get(split)

    def render_frames(self, split: str = "mapping", width_px: int | None = None,
                      height_px: int | None = None, stride: int = 1, sensor=None) -> Iterator[Frame]:
        """Render every ``stride``-th frame of a split as Frames (image, depth, pose, stamp).

        sensor: SensorEffects to apply instead of the scene's own (``sensor_effects(split)``);
        keyed by the frame's index in the split, so a stride changes nothing of a frame."""
        effects = sensor if sensor is not None else self.sensor_effects(split)
        scene = self.scene()
        intrinsics = self.intrinsics(width_px, height_px)
        poses = self.poses(split)
        stamps = self.stamps_ns(split)
        lens = CameraModel(intrinsics, self.distortion_model, np.asarray(self.distortion, np.float64)) \
            if self.distortion else None
        for index in range(0, len(poses), stride):
            image, depth = render(scene, poses[index], intrinsics, lens=lens)
            frame = Frame(image, intrinsics, int(stamps[index]), depth, poses[index].copy(),
                          f"{self.name}-{split}-{index:06d}", self.distortion_model, tuple(self.distortion))
            if effects is not None:
                frame = effects.apply(frame, index, poses[index - 1] if index > 0 else None)
            yield frame

    def proximity(self) -> dict:
        """Distance / angle statistics of test frames to their nearest mapping frames."""
        return proximity_summary(self.poses("mapping"), self.poses("test"))


# --------------------------------------------------------------------------------------------------
# the standard scenes


def _build_small_room() -> Scene:
    seed = 1
    b = SceneBuilder("small_room", (4.2, 3.4, 2.6), seed=seed,
                     description="a 4.2 x 3.4 m room with posters, a cabinet, a bookshelf, a desk and plain walls")
    wall_plain = tx.procedural_texture("plaster", seed, (1.5, 1.5))
    wall_warm = tx.procedural_texture("plaster", seed + 1, (1.5, 1.5))
    wallpaper = tx.procedural_texture("stripes", seed + 2, (0.6, 0.6))
    b.room(floor=tx.procedural_texture("wood", seed, (0.8, 0.8)),
           ceiling=tx.procedural_texture("plaster", seed + 3, (2.0, 2.0)),
           walls=[wall_plain, wall_warm, wallpaper, wall_plain])
    b.box((0.0, 0.5, 0.0), (0.45, 1.7, 1.1), tx.procedural_texture("wood", seed + 4, (0.6, 0.6)))
    b.box((3.8, 1.8, 0.0), (4.2, 3.2, 1.8), tx.photo_texture("page", (0.5, 0.25), repeat=True),
          top=tx.procedural_texture("noise", seed + 5, (0.5, 0.5)))
    b.box((1.2, 2.8, 0.70), (2.6, 3.4, 0.76), tx.procedural_texture("wood", seed + 6, (0.7, 0.7)),
          top=tx.photo_texture("text", (0.6, 0.25), repeat=True))
    b.box((1.25, 2.85, 0.0), (1.65, 3.4, 0.70), tx.procedural_texture("tiles", seed + 7, (0.4, 0.4)))
    b.box((2.8, 0.0, 0.0), (3.4, 0.5, 0.5), tx.procedural_texture("checker", seed + 8, (0.3, 0.3)))
    b.box((1.95, 1.6, 0.0), (2.25, 1.8, 0.45), tx.photo_texture("coins", (0.35, 0.3), repeat=True))
    b.poster("-x", 1.1, 1.75, tx.photo_texture("coffee"), width_m=0.9)
    b.poster("+x", 0.9, 1.4, tx.photo_texture("rocket"), width_m=1.0)
    b.poster("+y", 2.0, 1.55, tx.photo_texture("astronaut"), width_m=0.8)
    b.poster("-y", 1.4, 1.5, tx.photo_texture("chelsea"), width_m=1.0)
    b.poster("-y", 3.1, 1.45, tx.photo_texture("immunohistochemistry"), width_m=0.55)
    b.poster("+y", 3.3, 1.6, tx.photo_texture("motorcycle"), width_m=0.6)
    return b.build()


def _build_large_room() -> Scene:
    seed = 2
    b = SceneBuilder("large_room", (8.0, 6.0, 3.0), seed=seed,
                     lighting=Lighting(position_m=(4.0, 3.0, 2.8), ambient=0.4, diffuse=0.9, falloff_m=5.0),
                     description="an 8 x 6 m hall with brick walls, a tiled floor and rows of identical crates")
    brick = tx.photo_texture("brick", (1.6, 1.6), repeat=True)
    crate = tx.procedural_texture("dots", seed, (0.5, 0.5))
    b.room(floor=tx.procedural_texture("checker", seed + 1, (1.0, 1.0)),
           ceiling=tx.procedural_texture("plaster", seed + 2, (2.0, 2.0)),
           walls=[brick, brick, brick, tx.procedural_texture("plaster", seed + 3, (2.0, 2.0))])
    for i in range(6):  # a row of identical crates along the -y wall: repetitive structure
        x0 = 0.8 + 1.1 * i
        b.box((x0, 0.0, 0.0), (x0 + 0.7, 0.7, 0.7), crate)
    for i in range(3):  # stacked crates along the +y wall
        x0 = 1.5 + 1.8 * i
        b.box((x0, 5.3, 0.0), (x0 + 0.7, 6.0, 1.4), crate)
    b.box((0.0, 2.0, 0.0), (0.6, 4.0, 0.9), tx.procedural_texture("tiles", seed + 4, (0.5, 0.5)))
    b.box((7.4, 1.5, 0.0), (8.0, 2.5, 2.0), tx.procedural_texture("stripes", seed + 5, (0.5, 0.5)))
    b.box((7.5, 3.5, 0.0), (8.0, 4.6, 1.0), tx.photo_texture("gravel", (0.6, 0.6), repeat=True))
    b.box((3.6, 2.7, 0.0), (4.4, 3.3, 0.5), tx.procedural_texture("wood", seed + 6, (0.6, 0.6)))
    b.poster("+y", 6.8, 1.8, tx.photo_texture("hubble_deep_field"), width_m=1.2)
    b.poster("-x", 1.2, 1.8, tx.photo_texture("retina"), width_m=1.0)
    b.poster("+x", 5.2, 1.7, tx.photo_texture("camera"), width_m=1.0)
    return b.build()


_SMALL_ROUTE = Route(centre_xy_m=(2.1, 1.7), semi_axes_m=(1.0, 0.6), height_m=1.35, look_height_m=1.15)
_LARGE_ROUTE = Route(centre_xy_m=(4.0, 3.0), semi_axes_m=(2.2, 1.4), height_m=1.45, look_height_m=1.0,
                     yaw_swing_cycles=3)

_REGISTRY: dict[str, SceneSpec] = {
    "small_room": SceneSpec("small_room", "4.2 x 3.4 m room: posters, furniture, plain walls (demo scene)",
                            _build_small_room, _SMALL_ROUTE, mapping_frames=300, mapping_passes=3,
                            test_frames=150, seed=1),
    "large_room": SceneSpec("large_room", "8 x 6 m hall: brick walls, tiled floor, identical crates (harder)",
                            _build_large_room, _LARGE_ROUTE, mapping_frames=480, mapping_passes=4,
                            test_frames=200, seed=2),
    # 7-Scenes length (1,000 to 7,000 mapping frames per scene): a hand-held camera at 30 Hz, five
    # loops of 27 s each through small_room. Rendered once and cached by the benchmarks; never in tests.
    "small_room_long": SceneSpec("small_room_long", "small_room at 30 Hz: 4,000 mapping frames in 5 loops "
                                 "(a 7-Scenes-length recording, benchmarks only)",
                                 _build_small_room, _SMALL_ROUTE, mapping_frames=4000, mapping_passes=5,
                                 test_frames=150, seed=4, frame_period_ns=FRAME_PERIOD_NS // 3),
    "tiny": SceneSpec("tiny", "small_room geometry, 24 mapping + 8 test frames at 160 x 120 (for tests)",
                      _build_small_room, _SMALL_ROUTE, mapping_frames=24, mapping_passes=2, test_frames=8,
                      seed=3, default_size_px=(160, 120)),
}
# Lens variants: the same rooms and camera paths through a wide-angle webcam lens (barrel
# distortion, about 50 px at the corners of a 640 x 480 image); CameraInfo carries the coefficients.
WEBCAM_LENS = ("plumb_bob", (-0.28, 0.09, 0.0005, -0.0008, -0.012))
# Sensor variants: the same rooms and paths as a Kinect-like RGB-D camera records them
# (dsac_ros.data.sensor: noise, JPEG, range-dependent depth noise, dropout, 5 m range, edge holes;
# test frames also with exposure / gamma changes and motion blur on half of them).
for _name in ("small_room", "large_room", "tiny"):
    _base = _REGISTRY[_name]
    _REGISTRY[f"{_name}_distorted"] = replace(
        _base, name=f"{_name}_distorted", distortion_model=WEBCAM_LENS[0], distortion=WEBCAM_LENS[1],
        description=_base.description + "; through a wide-angle lens (plumb_bob distortion)")
    _REGISTRY[f"{_name}_sensor"] = replace(
        _base, name=f"{_name}_sensor", sensor=(("mapping", SENSOR_MAPPING), ("test", SENSOR_TEST)),
        description=_base.description + "; with a Kinect-like camera's noise, JPEG, depth noise and holes, "
                                        "exposure changes and motion blur (test)")


@functools.lru_cache(maxsize=None)
def _built_scene(name: str) -> Scene:
    return _REGISTRY[name].build()


def list_scenes() -> list[str]:
    """Names of the registered scenes: the small room first, then large_room, small_room_long, the test-only
    ``tiny``, and the lens and sensor variants (``*_distorted``, ``*_sensor``)."""
    return list(_REGISTRY)


def get_scene(name: str) -> SceneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown scene {name!r}; choose from {', '.join(_REGISTRY)}") from None


# --------------------------------------------------------------------------------------------------
# random scenes for pretraining


def random_scene(seed: int) -> Scene:
    """A procedurally varied room: size, furniture boxes, photo and procedural textures, lighting.

    Deterministic per seed; its random stream is keyed apart from every standard scene's.
    Use ``trajectories.random_views(scene, n, seed)`` for camera poses inside it.
    """
    rng = np.random.default_rng([0x5EED, 0xA11, int(seed)])
    size = np.array([rng.uniform(3.0, 9.0), rng.uniform(3.0, 8.0), rng.uniform(2.4, 3.4)])
    lighting = Lighting(
        position_m=tuple(np.array([rng.uniform(0.3, 0.7) * size[0], rng.uniform(0.3, 0.7) * size[1],
                                   size[2] - 0.15])),
        ambient=rng.uniform(0.25, 0.6), diffuse=rng.uniform(0.4, 1.1), falloff_m=rng.uniform(2.5, 7.0),
        tint=tuple(rng.uniform(0.85, 1.1, 3)), exposure=rng.uniform(0.8, 1.2))
    b = SceneBuilder(f"random_{seed}", size, lighting=lighting, seed=int(seed), description="random room")

    def any_texture(low_texture_bias: float = 0.0):
        roll = rng.random()
        scale = rng.uniform(0.3, 1.5)
        if roll < low_texture_bias:
            return tx.procedural_texture("plaster", int(rng.integers(1 << 30)), (2.0, 2.0))
        if roll < low_texture_bias + (1 - low_texture_bias) * 0.35:
            name = str(rng.choice(tx.PHOTO_NAMES + tx.SURFACE_PHOTO_NAMES))
            tint = tuple(float(v) for v in rng.uniform(0.8, 1.15, 3))
            return tx.photo_texture(name, (scale, scale), repeat=True, tint=tint)
        kind = str(rng.choice(tx.PROCEDURAL_NAMES))
        return tx.procedural_texture(kind, int(rng.integers(1 << 30)), (scale, scale))

    b.room(floor=any_texture(0.2), ceiling=any_texture(0.7), walls=[any_texture(0.4) for _ in range(4)])
    for _ in range(int(rng.integers(3, 10))):  # furniture along the walls
        w, d, h = rng.uniform(0.3, 1.6), rng.uniform(0.3, 0.8), rng.uniform(0.3, 2.0)
        wall = int(rng.integers(4))
        along = 0 if wall >= 2 else 1
        extent = size[along]
        start = rng.uniform(0, max(extent - w, 0.01))
        lo, hi = np.zeros(3), np.zeros(3)
        lo[along], hi[along] = start, min(start + w, extent)
        across = 1 - along
        if wall % 2 == 0:
            lo[across], hi[across] = 0.0, d
        else:
            lo[across], hi[across] = size[across] - d, size[across]
        hi[2] = min(h, size[2] - 0.1)
        b.box(lo, hi, any_texture(), top=any_texture())
    for _ in range(int(rng.integers(0, 3))):  # free-standing boxes
        w, d, h = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8), rng.uniform(0.3, 1.0)
        x0 = rng.uniform(1.0, max(size[0] - 1.0 - w, 1.01))
        y0 = rng.uniform(1.0, max(size[1] - 1.0 - d, 1.01))
        b.box((x0, y0, 0.0), (x0 + w, y0 + d, h), any_texture())
    for _ in range(int(rng.integers(1, 5))):  # pictures
        name = str(rng.choice(tx.PHOTO_NAMES))
        wall = str(rng.choice(["-x", "+x", "-y", "+y"]))
        along = 1 if wall[1] == "x" else 0
        width = rng.uniform(0.4, 1.2)
        texture = tx.photo_texture(name)
        height = width * texture.size_m[1] / texture.size_m[0]
        if width + 0.2 > size[along] or height + 0.6 > size[2]:
            continue
        centre = rng.uniform(width / 2 + 0.1, size[along] - width / 2 - 0.1)
        centre_height = rng.uniform(max(1.0, height / 2 + 0.3), max(1.0, size[2] - height / 2 - 0.3) + 1e-6)
        b.poster(wall, centre, min(centre_height, size[2] - height / 2 - 0.05), texture, width_m=width)
    return b.build()


def random_scene_frames(seed: int, n_frames: int, width_px: int = 640, height_px: int = 480) -> Iterator[Frame]:
    """Frames from random views of ``random_scene(seed)`` (pretraining data)."""
    scene = random_scene(seed)
    intrinsics = BASE_INTRINSICS if (width_px, height_px) == (640, 480) else BASE_INTRINSICS.resized(width_px, height_px)
    for index, pose in enumerate(random_views(scene, n_frames, seed)):
        image, depth = render(scene, pose, intrinsics)
        yield Frame(image, intrinsics, index * FRAME_PERIOD_NS, depth, pose, f"random_{seed}-{index:06d}")
