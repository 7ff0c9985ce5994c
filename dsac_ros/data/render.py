"""A small vectorised ray caster for box-shaped indoor scenes with exact ground truth.

A scene is a set of axis-aligned textured rectangles ("quads"): the six inner faces of a room,
the outer faces of furniture-like boxes, and posters hung slightly in front of walls. Each pixel's
ray is intersected with every quad that can project onto it (a quad's pixel bounding box limits the
work), the nearest hit wins, and its colour is a bilinear, mip-mapped texture lookup times a simple
Lambertian shading from one point light. Everything is numpy; a 640x480 frame takes a fraction of a
second on one CPU core.

World frame: metres, z up, the floor at z = 0 (ROS ``map`` convention). Camera: optical frame,
x right, y down, z forward; poses are ``world_T_cam`` (camera-to-world).

Depth is **z-depth**: the distance along the optical axis (camera z), not the length of the ray,
as in Kinect / RealSense depth images and ROS ``32FC1`` depth topics. Every pixel of a closed room
hits a surface, so depth is valid (> 0) everywhere. Depth is rounded to 16 significant bits
(relative error < 1.5e-5) so that bags compress well; see ``round_depth_precision``.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from dsac_ros.camera import Intrinsics
from dsac_ros.data.textures import Texture

NEAR_M = 1e-3  # hits closer than this are ignored (the camera never gets this close to a surface)
DEPTH_DROPPED_MANTISSA_BITS = 8  # see round_depth_precision


@dataclass(frozen=True)
class Quad:
    """An axis-aligned rectangle.

    axis: world axis (0 x, 1 y, 2 z) the quad is perpendicular to; offset_m its coordinate there.
    normal_sign: +1 or -1, the side the visible face points to along ``axis``.
    lo_m, hi_m: bounds along the two other axes, in increasing axis order (e.g. (x, z) for axis 1).
    texture: index into ``Scene.textures``; brightness: per-face multiplier (a cheap way to make
    faces of a box differ, as under real lighting).
    """

    axis: int
    offset_m: float
    normal_sign: int
    lo_m: tuple[float, float]
    hi_m: tuple[float, float]
    texture: int
    brightness: float = 1.0

    @property
    def plane_axes(self) -> tuple[int, int]:
        return tuple(a for a in range(3) if a != self.axis)  # type: ignore[return-value]

    @property
    def normal(self) -> np.ndarray:
        n = np.zeros(3)
        n[self.axis] = self.normal_sign
        return n

    def corners(self) -> np.ndarray:
        """(4, 3) corner points in world metres."""
        a1, a2 = self.plane_axes
        points = np.zeros((4, 3))
        points[:, self.axis] = self.offset_m
        points[:, a1] = [self.lo_m[0], self.hi_m[0], self.hi_m[0], self.lo_m[0]]
        points[:, a2] = [self.lo_m[1], self.lo_m[1], self.hi_m[1], self.hi_m[1]]
        return points


@dataclass
class Lighting:
    """One point light plus ambient light; ``tint`` is an RGB white balance, ``exposure`` a gain."""

    position_m: tuple[float, float, float]
    ambient: float = 0.45
    diffuse: float = 0.75
    falloff_m: float = 4.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    exposure: float = 1.0


@dataclass
class Scene:
    """Room interior bounds, furniture boxes, textured quads and lighting. Build with SceneBuilder."""

    name: str
    room_min_m: np.ndarray
    room_max_m: np.ndarray
    boxes: list  # [(min (3,), max (3,)), ...] furniture, for collision checks
    quads: list
    textures: list
    lighting: Lighting
    seed: int = 0
    description: str = ""

    def clearance_m(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) points -> (N,) distance to the nearest wall, floor, ceiling or box (negative inside)."""
        p = np.asarray(points_world, np.float64).reshape(-1, 3)
        to_room = np.minimum(p - self.room_min_m, self.room_max_m - p).min(axis=1)
        clearance = to_room
        for box_min, box_max in self.boxes:
            outside = np.maximum(np.maximum(box_min - p, p - box_max), 0.0)
            inside_depth = np.minimum(p - box_min, box_max - p).min(axis=1)
            dist = np.where(np.all(outside == 0, axis=1), -inside_depth, np.linalg.norm(outside, axis=1))
            clearance = np.minimum(clearance, dist)
        return clearance


class SceneBuilder:
    """Collects quads and textures; ``build()`` returns the Scene."""

    def __init__(self, name: str, room_size_m: Sequence[float], lighting: Optional[Lighting] = None,
                 seed: int = 0, description: str = "") -> None:
        self.name = name
        self.room_min_m = np.zeros(3)
        self.room_max_m = np.asarray(room_size_m, np.float64)
        self.boxes: list = []
        self.quads: list = []
        self.textures: list = []
        self._texture_ids: dict = {}
        self.seed = seed
        self.description = description
        centre = 0.5 * (self.room_min_m + self.room_max_m)
        self.lighting = lighting or Lighting(position_m=(centre[0], centre[1], self.room_max_m[2] - 0.2))

    def texture(self, texture: Texture) -> int:
        key = id(texture)
        if key not in self._texture_ids:
            self._texture_ids[key] = len(self.textures)
            self.textures.append(texture)
        return self._texture_ids[key]

    def _quad(self, axis, offset, sign, lo, hi, texture: Texture, brightness=1.0) -> None:
        self.quads.append(Quad(int(axis), float(offset), int(sign), (float(lo[0]), float(lo[1])),
                               (float(hi[0]), float(hi[1])), self.texture(texture), float(brightness)))

    def room(self, floor: Texture, ceiling: Texture, walls: Sequence[Texture]) -> "SceneBuilder":
        """Inner faces of the room; ``walls`` in the order -x, +x, -y, +y (at x=0, x=X, y=0, y=Y)."""
        lo, hi = self.room_min_m, self.room_max_m
        self._quad(2, lo[2], +1, lo[:2], hi[:2], floor)
        self._quad(2, hi[2], -1, lo[:2], hi[:2], ceiling, 0.95)
        self._quad(0, lo[0], +1, (lo[1], lo[2]), (hi[1], hi[2]), walls[0], 0.97)
        self._quad(0, hi[0], -1, (lo[1], lo[2]), (hi[1], hi[2]), walls[1], 1.0)
        self._quad(1, lo[1], +1, (lo[0], lo[2]), (hi[0], hi[2]), walls[2], 0.93)
        self._quad(1, hi[1], -1, (lo[0], lo[2]), (hi[0], hi[2]), walls[3], 1.03)
        return self

    def box(self, min_m: Sequence[float], max_m: Sequence[float], sides: Texture,
            top: Optional[Texture] = None) -> "SceneBuilder":
        """An axis-aligned box (furniture). The bottom face is omitted when it rests on the floor."""
        b0, b1 = np.asarray(min_m, np.float64), np.asarray(max_m, np.float64)
        if np.any(b1 <= b0) or np.any(b0 < self.room_min_m) or np.any(b1 > self.room_max_m):
            raise ValueError(f"box {b0}..{b1} is empty or outside the room")
        self.boxes.append((b0, b1))
        top = top or sides
        self._quad(2, b1[2], +1, b0[:2], b1[:2], top, 1.05)
        if b0[2] > 1e-9:
            self._quad(2, b0[2], -1, b0[:2], b1[:2], sides, 0.7)
        self._quad(0, b0[0], -1, (b0[1], b0[2]), (b1[1], b1[2]), sides, 0.85)
        self._quad(0, b1[0], +1, (b0[1], b0[2]), (b1[1], b1[2]), sides, 0.95)
        self._quad(1, b0[1], -1, (b0[0], b0[2]), (b1[0], b1[2]), sides, 0.9)
        self._quad(1, b1[1], +1, (b0[0], b0[2]), (b1[0], b1[2]), sides, 1.0)
        return self

    def poster(self, wall: str, centre_along_m: float, centre_height_m: float, texture: Texture,
               width_m: Optional[float] = None) -> "SceneBuilder":
        """A picture hung 5 mm in front of a wall ('-x', '+x', '-y', '+y'), not tiled."""
        axis = {"x": 0, "y": 1}[wall[1]]
        at_min = wall[0] == "-"
        offset = (self.room_min_m[axis] + 0.005) if at_min else (self.room_max_m[axis] - 0.005)
        w, h = texture.size_m
        if width_m is not None:
            w, h = width_m, width_m * h / w
        along = 1 - axis  # the horizontal in-plane axis
        lo = [0.0, 0.0]
        hi = [0.0, 0.0]
        lo[0], hi[0] = centre_along_m - w / 2, centre_along_m + w / 2
        lo[1], hi[1] = centre_height_m - h / 2, centre_height_m + h / 2
        if lo[0] < self.room_min_m[along] or hi[0] > self.room_max_m[along] or lo[1] < 0 or hi[1] > self.room_max_m[2]:
            raise ValueError(f"poster {texture.name} does not fit on wall {wall}")
        stretched = Texture(texture.mips, (w, h), repeat=False, name=texture.name)
        self._quad(axis, offset, +1 if at_min else -1, lo, hi, stretched)
        return self

    def build(self) -> Scene:
        return Scene(self.name, self.room_min_m, self.room_max_m, self.boxes, self.quads, self.textures,
                     self.lighting, self.seed, self.description)


# --------------------------------------------------------------------------------------------------
# ray casting


def camera_rays(intrinsics: Intrinsics, pixels_xy: Optional[np.ndarray] = None) -> np.ndarray:
    """Unnormalised camera-frame rays with z = 1.

    pixels_xy: (N, 2) pixel coordinates (x right, y down; pixel centres at integers); None for the
        full image grid. Returns (N, 3) or (H, W, 3) float64. With z = 1, a ray's hit parameter t
        equals the hit's z-depth.
    """
    if pixels_xy is None:
        xs = (np.arange(intrinsics.width_px) - intrinsics.cx_px) / intrinsics.fx_px
        ys = (np.arange(intrinsics.height_px) - intrinsics.cy_px) / intrinsics.fy_px
        rays = np.empty((intrinsics.height_px, intrinsics.width_px, 3))
        rays[..., 0] = xs[None, :]
        rays[..., 1] = ys[:, None]
        rays[..., 2] = 1.0
        return rays
    pixels_xy = np.asarray(pixels_xy, np.float64).reshape(-1, 2)
    return np.stack([(pixels_xy[:, 0] - intrinsics.cx_px) / intrinsics.fx_px,
                     (pixels_xy[:, 1] - intrinsics.cy_px) / intrinsics.fy_px,
                     np.ones(len(pixels_xy))], axis=1)


def _intersect(quad: Quad, origin: np.ndarray, dirs: np.ndarray, best_t: np.ndarray):
    """Hit parameter of rays (..., 3) with one quad; returns (t, hit mask) where hit beats best_t."""
    a = quad.axis
    a1, a2 = quad.plane_axes
    d = dirs[..., a]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (quad.offset_m - origin[a]) / d
    hit = (t > NEAR_M) & (t < best_t)
    p1 = origin[a1] + t * dirs[..., a1]
    p2 = origin[a2] + t * dirs[..., a2]
    hit &= (p1 >= quad.lo_m[0]) & (p1 <= quad.hi_m[0]) & (p2 >= quad.lo_m[1]) & (p2 <= quad.hi_m[1])
    return t, hit


def _pixel_region(quad: Quad, cam_T_world: np.ndarray, intrinsics: Intrinsics,
                  pinhole_xy: Optional[tuple[np.ndarray, np.ndarray]] = None):
    """(row slice, column slice) of pixels the quad can cover, or None when it is not visible.

    pinhole_xy: for a distorted image, where each of its pixels falls in the pinhole image
    (``dsac_ros.camera.distorted_pixel_map``); the region is then the pixels whose pinhole position
    lies in the quad's pinhole bounding box."""
    corners_cam = quad.corners() @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
    z = corners_cam[:, 2]
    if np.all(z <= NEAR_M):
        return None
    if np.any(z <= NEAR_M):  # straddles the image plane: its projection is unbounded
        return slice(0, intrinsics.height_px), slice(0, intrinsics.width_px)
    u = intrinsics.fx_px * corners_cam[:, 0] / z + intrinsics.cx_px
    v = intrinsics.fy_px * corners_cam[:, 1] / z + intrinsics.cy_px
    if pinhole_xy is not None:
        map_x, map_y = pinhole_xy
        inside = ((map_x >= u.min() - 1) & (map_x <= u.max() + 1) & (map_y >= v.min() - 1) & (map_y <= v.max() + 1))
        rows, columns = np.any(inside, axis=1), np.any(inside, axis=0)
        if not rows.any():
            return None
        y0, y1 = np.argmax(rows), len(rows) - np.argmax(rows[::-1])
        x0, x1 = np.argmax(columns), len(columns) - np.argmax(columns[::-1])
        return slice(int(y0), int(y1)), slice(int(x0), int(x1))
    x0 = max(int(np.floor(u.min())) - 1, 0)
    x1 = min(int(np.ceil(u.max())) + 2, intrinsics.width_px)
    y0 = max(int(np.floor(v.min())) - 1, 0)
    y1 = min(int(np.ceil(v.max())) + 2, intrinsics.height_px)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def cast_rays(scene: Scene, origin_world: np.ndarray, dirs_world: np.ndarray):
    """Nearest hit of each ray.

    origin_world: (3,) ray origin; dirs_world: (N, 3) directions (any length).
    Returns t (N,) float64 (hit = origin + t * dir; inf when nothing is hit) and quad index (N,) int
    (-1 when nothing is hit).
    """
    dirs_world = np.asarray(dirs_world, np.float64).reshape(-1, 3)
    origin_world = np.asarray(origin_world, np.float64).reshape(3)
    best_t = np.full(len(dirs_world), np.inf)
    best_q = np.full(len(dirs_world), -1, dtype=np.int32)
    for index, quad in enumerate(scene.quads):
        t, hit = _intersect(quad, origin_world, dirs_world, best_t)
        best_t[hit] = t[hit]
        best_q[hit] = index
    return best_t, best_q


def depth_at_pixels(scene: Scene, world_T_cam: np.ndarray, intrinsics: Intrinsics,
                    pixels_xy: np.ndarray) -> np.ndarray:
    """(N, 2) sub-pixel positions -> (N,) exact z-depth in metres (inf where nothing is hit)."""
    rays_cam = camera_rays(intrinsics, pixels_xy)
    t, _ = cast_rays(scene, world_T_cam[:3, 3], rays_cam @ np.asarray(world_T_cam)[:3, :3].T)
    return t


def _sample_texture(texture: Texture, u: np.ndarray, v: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Bilinear lookup at texture coordinates u, v (in copies of the image; v down) -> (N, 3)."""
    out = np.empty((len(u), 3), np.float32)
    for lvl in np.unique(level):
        sel = level == lvl
        image = texture.mips[int(lvl)]
        h, w = image.shape[:2]
        x = u[sel] * w - 0.5
        y = v[sel] * h - 0.5
        x0 = np.floor(x)
        y0 = np.floor(y)
        fx = (x - x0).astype(np.float32)[:, None]
        fy = (y - y0).astype(np.float32)[:, None]
        x0 = x0.astype(np.int64)
        y0 = y0.astype(np.int64)
        if texture.repeat:
            x0, x1 = x0 % w, (x0 + 1) % w
            y0, y1 = y0 % h, (y0 + 1) % h
        else:
            x1 = np.clip(x0 + 1, 0, w - 1)
            y1 = np.clip(y0 + 1, 0, h - 1)
            x0 = np.clip(x0, 0, w - 1)
            y0 = np.clip(y0, 0, h - 1)
        top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
        bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
        out[sel] = top * (1 - fy) + bottom * fy
    return out


def _shade(scene: Scene, quad: Quad, hit_world: np.ndarray, t: np.ndarray, dirs: np.ndarray,
           fx_px: float) -> np.ndarray:
    """RGB in [0, ~1.2] of the hits (N, 3) on one quad."""
    texture: Texture = scene.textures[quad.texture]
    a1, a2 = quad.plane_axes
    w_m, h_m = texture.size_m
    # Horizontal texture axis points to the viewer's right so pictures are not mirrored.
    if quad.axis == 2:
        u = (hit_world[:, a1] - (0.0 if texture.repeat else quad.lo_m[0])) / w_m
        v = (hit_world[:, a2] - (0.0 if texture.repeat else quad.lo_m[1])) / h_m
    else:
        right = np.cross(-quad.normal, [0.0, 0.0, 1.0])
        if right[a1] > 0:
            u = (hit_world[:, a1] - (0.0 if texture.repeat else quad.lo_m[0])) / w_m
        else:
            u = ((0.0 if texture.repeat else quad.hi_m[0]) - hit_world[:, a1]) / w_m
        v = ((quad.hi_m[1] if not texture.repeat else scene.room_max_m[2]) - hit_world[:, a2]) / h_m
    # Mip level from the pixel footprint on the surface (grazing views cover more texels).
    cos_incidence = np.abs(dirs[:, quad.axis]) / np.linalg.norm(dirs, axis=1)
    footprint_m = t * np.linalg.norm(dirs, axis=1) / fx_px / np.maximum(cos_incidence, 0.25)
    texels = np.maximum(footprint_m * texture.texels_per_m, 1.0)
    level = np.clip(np.round(np.log2(texels)), 0, len(texture.mips) - 1).astype(np.int32)
    albedo = _sample_texture(texture, u, v, level)

    light = scene.lighting
    to_light = np.asarray(light.position_m) - hit_world
    distance = np.linalg.norm(to_light, axis=1)
    cos_light = np.clip(to_light[:, quad.axis] * quad.normal_sign / np.maximum(distance, 1e-9), 0.0, 1.0)
    intensity = light.ambient + light.diffuse * cos_light / (1.0 + (distance / light.falloff_m) ** 2)
    gain = np.asarray(light.tint, np.float32) * (quad.brightness * light.exposure)
    return albedo * (intensity.astype(np.float32)[:, None] * gain[None, :])


@functools.lru_cache(maxsize=8)
def _lens_rays(lens_key: tuple) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Camera rays (H, W, 3) of a distorted image (z = 1) and its pinhole positions, per lens."""
    from dsac_ros.camera import CameraModel, distorted_pixel_map

    intrinsics, model, coefficients = lens_key
    map_x, map_y = distorted_pixel_map(CameraModel(intrinsics, model, np.asarray(coefficients, np.float64)))
    rays = np.stack([(map_x - intrinsics.cx_px) / intrinsics.fx_px, (map_y - intrinsics.cy_px) / intrinsics.fy_px,
                     np.ones_like(map_x)], axis=-1).astype(np.float64)
    return rays, (map_x, map_y)


def render(scene: Scene, world_T_cam: np.ndarray, intrinsics: Intrinsics, lens=None):
    """Render one view.

    world_T_cam: (4, 4) camera-to-world pose (optical frame: x right, y down, z forward).
    lens: optional ``dsac_ros.camera.CameraModel`` (with these intrinsics): the image is rendered
    through its distortion, one ray per distorted pixel, as a real lens forms it (no resampling).
    Returns image_rgb (H, W, 3) uint8 and depth_m (H, W) float32 z-depth in metres (> 0 wherever a
    surface is hit, 0 elsewhere, which never happens inside a closed room), registered to the image.
    """
    world_T_cam = np.asarray(world_T_cam, np.float64)
    cam_T_world = np.linalg.inv(world_T_cam)
    origin = world_T_cam[:3, 3]
    pinhole_xy = None
    if lens is not None and lens.is_distorted:
        rays_cam, pinhole_xy = _lens_rays(lens.key())
    else:
        rays_cam = camera_rays(intrinsics)
    dirs = rays_cam @ world_T_cam[:3, :3].T  # (H, W, 3)
    height, width = intrinsics.height_px, intrinsics.width_px
    best_t = np.full((height, width), np.inf)
    best_q = np.full((height, width), -1, dtype=np.int32)
    for index, quad in enumerate(scene.quads):
        region = _pixel_region(quad, cam_T_world, intrinsics, pinhole_xy)
        if region is None:
            continue
        t, hit = _intersect(quad, origin, dirs[region], best_t[region])
        best_t[region][hit] = t[hit]
        best_q[region][hit] = index

    flat_q = best_q.ravel()
    flat_t = best_t.ravel()
    flat_dirs = dirs.reshape(-1, 3)
    colour = np.zeros((height * width, 3), np.float32)
    order = np.argsort(flat_q, kind="stable")
    counts = np.bincount(flat_q + 1, minlength=len(scene.quads) + 1)
    start = counts[0]  # pixels that hit nothing come first (q = -1) and stay black
    for index in range(len(scene.quads)):
        count = counts[index + 1]
        if count == 0:
            continue
        pixels = order[start:start + count]
        start += count
        t = flat_t[pixels]
        d = flat_dirs[pixels]
        colour[pixels] = _shade(scene, scene.quads[index], origin + t[:, None] * d, t, d, intrinsics.fx_px)
    image = (np.clip(colour, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(height, width, 3)
    depth = np.where(np.isfinite(best_t), best_t, 0.0).astype(np.float32)
    return image, round_depth_precision(depth)


def round_depth_precision(depth_m: np.ndarray, dropped_bits: int = DEPTH_DROPPED_MANTISSA_BITS) -> np.ndarray:
    """Round float32 depth to 24 - dropped_bits significant bits (in place; returns it).

    With 8 bits dropped the relative error is below 2**-16 (0.08 mm at 5 m), far under any depth
    sensor's noise and under 0.01 px of reprojection error, while the cleared low mantissa bits let
    32FC1 depth compress about 4x in bags.
    """
    bits = depth_m.view(np.uint32)
    half = np.uint32(1 << (dropped_bits - 1))
    mask = np.uint32((0xFFFFFFFF >> dropped_bits) << dropped_bits)
    bits += half
    bits &= mask
    return depth_m
