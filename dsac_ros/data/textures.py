"""Textures for the synthetic scenes: real photographs shipped with scikit-image, and procedural ones.

A texture is an image plus its physical size (metres per repeat) and whether it tiles. The renderer
samples it bilinearly from a small mip pyramid so that distant surfaces do not alias.

Real rooms mix rich texture (posters, books), repetitive texture (bricks, floor tiles) and nearly
uniform surfaces (painted walls, ceilings); the scenes use all three so that relocalisation meets
the same ambiguities as on real data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

# Photographs in skimage.data that ship inside the wheel (no download at run time).
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field",
    "immunohistochemistry", "retina", "camera", "coins", "moon", "page", "text", "cell",
)
# Photographs of surfaces that tile acceptably (used for floors, walls, box sides).
SURFACE_PHOTO_NAMES: tuple[str, ...] = ("brick", "grass", "gravel")
PROCEDURAL_NAMES: tuple[str, ...] = (
    "plaster", "checker", "stripes", "wood", "tiles", "noise", "dots", "carpet",
)


@dataclass
class Texture:
    """A texture image and how it maps onto a surface.

    mips: list of (h, w, 3) float32 images in [0, 1], level 0 full resolution, each level half the
        previous one; the renderer picks a level per pixel from its footprint.
    size_m: (width_m, height_m) of one copy of the image on a surface.
    repeat: tile the image (True) or stretch it once over the surface (False, for posters).
    name: where it came from, for descriptions and debugging.
    """

    mips: list
    size_m: tuple[float, float]
    repeat: bool = True
    name: str = ""
    texels_per_m: float = field(init=False)

    def __post_init__(self) -> None:
        height, width = self.mips[0].shape[:2]
        self.texels_per_m = float(max(width / self.size_m[0], height / self.size_m[1]))


def _to_rgb_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.float32)
    elif image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    else:
        image = image.astype(np.float32)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def build_mips(image: np.ndarray, levels: int = 6) -> list:
    """(h, w, 3) float32 -> list of 2x box-filtered levels (stops at 8 px)."""
    mips = [image]
    for _ in range(levels - 1):
        previous = mips[-1]
        h, w = previous.shape[0] // 2 * 2, previous.shape[1] // 2 * 2
        if h < 16 or w < 16:
            break
        p = previous[:h, :w]
        mips.append(0.25 * (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]))
    return mips


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A scikit-image photograph as (h, w, 3) float32 in [0, 1] (read once, then cached)."""
    import skimage.data

    if name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]
    else:
        image = getattr(skimage.data, name)()
    rgb = _to_rgb_float(image)
    rgb.setflags(write=False)
    return rgb


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) periodic smooth noise in [0, 1]: bicubic-ish upsampling of a random grid."""
    grid = rng.random((cells, cells)).astype(np.float32)
    coords = np.arange(size, dtype=np.float32) * cells / size
    i0 = np.floor(coords).astype(int)
    f = coords - i0
    f = f * f * (3 - 2 * f)  # smoothstep keeps the noise free of grid creases
    i1 = (i0 + 1) % cells
    rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def _fractal_noise(rng: np.random.Generator, size: int, base_cells: int = 4, octaves: int = 5) -> np.ndarray:
    total = np.zeros((size, size), np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = min(base_cells * 2 ** octave, size)
        total += amplitude * _value_noise(rng, size, cells)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def _colourise(gray: np.ndarray, colour_a, colour_b) -> np.ndarray:
    a = np.asarray(colour_a, np.float32)
    b = np.asarray(colour_b, np.float32)
    return np.clip(a[None, None] * (1 - gray[..., None]) + b[None, None] * gray[..., None], 0, 1)


def _random_colour(rng: np.random.Generator, low: float = 0.15, high: float = 0.95) -> np.ndarray:
    return rng.uniform(low, high, size=3).astype(np.float32)


def procedural(kind: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """(size, size, 3) float32 periodic procedural texture of the given kind."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = _random_colour(rng), _random_colour(rng)
    if kind == "plaster":  # nearly uniform painted surface: the low-texture case
        base = _random_colour(rng, 0.55, 0.9)
        n = _fractal_noise(rng, size, 8, 4)
        return np.clip(base[None, None] * (0.94 + 0.08 * n[..., None]), 0, 1)
    if kind == "checker":
        cells = int(rng.integers(2, 5))
        g = ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(np.float32)
        return _colourise(g * 0.9 + 0.05 * _fractal_noise(rng, size, 16, 2), c1, c2)
    if kind == "stripes":
        cells = int(rng.integers(3, 9))
        g = 0.5 + 0.5 * np.sin(2 * np.pi * cells * x)
        return _colourise(g, c1, c2)
    if kind == "wood":
        n = _fractal_noise(rng, size, 4, 4)
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (6 * y + 3 * n))
        return _colourise(rings, (0.45, 0.28, 0.14), (0.72, 0.52, 0.32))
    if kind == "tiles":
        cells = int(rng.integers(2, 5))
        fx, fy = (x * cells) % 1.0, (y * cells) % 1.0
        grout = (np.minimum(np.minimum(fx, 1 - fx), np.minimum(fy, 1 - fy)) < 0.04).astype(np.float32)
        tile = _colourise(_fractal_noise(rng, size, 8, 3) * 0.3, c1, c1 * 0.8)
        return tile * (1 - grout[..., None]) + 0.3 * grout[..., None]
    if kind == "noise":
        return _colourise(_fractal_noise(rng, size, 4, 6), c1, c2)
    if kind == "dots":
        cells = int(rng.integers(3, 7))
        fx, fy = (x * cells) % 1.0 - 0.5, (y * cells) % 1.0 - 0.5
        g = (fx * fx + fy * fy < 0.09).astype(np.float32)
        return _colourise(g, c1, c2)
    if kind == "carpet":
        n = _fractal_noise(rng, size, 32, 3)
        return _colourise(n, c1 * 0.6, c1)
    raise ValueError(f"unknown procedural texture {kind!r}; choose from {PROCEDURAL_NAMES}")


def photo_texture(name: str, size_m: tuple[float, float] | None = None, repeat: bool = False,
                  tint=(1.0, 1.0, 1.0), height_m: float = 0.8) -> Texture:
    """A photograph as a texture. Without ``size_m`` it keeps its aspect ratio at ``height_m``."""
    image = photo(name)
    if tint != (1.0, 1.0, 1.0):
        image = np.clip(image * np.asarray(tint, np.float32)[None, None], 0, 1)
    if size_m is None:
        h, w = image.shape[:2]
        size_m = (height_m * w / h, height_m)
    return Texture(build_mips(image), size_m, repeat, name)


def procedural_texture(kind: str, seed: int, size_m: tuple[float, float] = (1.0, 1.0),
                       resolution: int = 256) -> Texture:
    rng = np.random.default_rng([0x7E7, seed, PROCEDURAL_NAMES.index(kind)])
    return Texture(build_mips(procedural(kind, rng, resolution)), size_m, True, f"{kind}#{seed}")
