"""Folder recordings: one RGB image, optional depth and pose per frame, plus intrinsics.

Layout (the 7-Scenes / 12-Scenes naming, so their sequences need only an ``intrinsics.txt``)::

    DIR/
      intrinsics.txt           3x3 K, row-major (3 lines of 3 numbers), or one line "fx fy cx cy"
      timestamps.txt           optional: "<frame name> <stamp in ns>" per line
      frame-000000.color.png   RGB image (.png or .jpg)
      frame-000000.depth.png   optional: 16-bit PNG, millimetres, 0 (or 65535) = invalid,
                               registered to the colour image (same size and intrinsics)
      frame-000000.pose.txt    optional: 4x4 world_T_cam (camera-to-world), metres
      frame-000000.intrinsics.txt  optional per-frame K overriding intrinsics.txt
      distortion.txt           optional lens distortion of the images: one line "<model> c1 c2 ...",
                               CameraInfo's model names and coefficient order (plumb_bob k1 k2 p1 p2 k3,
                               rational_polynomial, equidistant); frame-000000.distortion.txt per frame

A directory without frames but with sub-directories of frames (``seq-01/``, ``seq-02/``, ...) is
read sub-directory by sub-directory, each using its own ``intrinsics.txt`` or the parent's.
Frames are ordered by the number in their name, not alphabetically. Without ``timestamps.txt``
stamps are the frame index at 30 Hz. Distorted images (and their depth) are undistorted to the same
K through ``dsac_ros.camera``, as the node and the bag reader do: every reader yields pinhole frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from dsac_ros.camera import CameraInfoError, CameraModel, Intrinsics, Undistorter, check_distortion
from dsac_ros.data.errors import RecordingError
from dsac_ros.frame import Frame

COLOUR_SUFFIXES = (".color.png", ".color.jpg", ".color.jpeg")
DEFAULT_PERIOD_NS = 33_333_333  # 30 Hz, the rate of 7-Scenes' Kinect


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _frame_stems(directory: Path) -> list[tuple[str, Path]]:
    """(stem, colour image path) of every frame in one directory, in numeric order."""
    found = {}
    for path in directory.iterdir():
        for suffix in COLOUR_SUFFIXES:
            if path.name.endswith(suffix):
                found[path.name[: -len(suffix)]] = path
    return sorted(found.items(), key=lambda item: _natural_key(item[0]))


def _read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).reshape(-1)
    except (ValueError, OSError) as error:
        raise RecordingError(f"{path}: cannot read numbers ({error})") from None
    if values.size != shape[0] * shape[1] or not np.all(np.isfinite(values)):
        raise RecordingError(f"{path}: expected {shape[0]}x{shape[1]} finite numbers, found {values.size}")
    return values.reshape(shape)


def read_intrinsics_file(path: Path, width_px: int, height_px: int) -> Intrinsics:
    """intrinsics.txt (3x3 K or "fx fy cx cy") -> Intrinsics for an image of the given size."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).reshape(-1)
    except (ValueError, OSError) as error:
        raise RecordingError(f"{path}: cannot read intrinsics ({error})") from None
    if values.size == 4:
        fx, fy, cx, cy = values
    elif values.size == 9:
        K = values.reshape(3, 3)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    else:
        raise RecordingError(f"{path}: expected a 3x3 K or 'fx fy cx cy', found {values.size} numbers")
    try:
        return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(width_px), int(height_px))
    except ValueError as error:
        raise RecordingError(f"{path}: {error}") from None


def read_distortion_file(path: Path) -> tuple[str, np.ndarray]:
    """distortion.txt ("<model> c1 c2 ...") -> (model, (N,) coefficients), checked as CameraInfo's are."""
    try:
        parts = path.read_text().split()
    except OSError as error:
        raise RecordingError(f"{path}: cannot read distortion ({error})") from None
    if not parts:
        raise RecordingError(f"{path}: empty; expected '<model> c1 c2 ...', e.g. 'plumb_bob k1 k2 p1 p2 k3'")
    try:
        coefficients = np.array([float(value) for value in parts[1:]], dtype=np.float64)
    except ValueError:
        raise RecordingError(f"{path}: coefficients must be numbers, got {' '.join(parts[1:])!r}") from None
    try:
        check_distortion(parts[0], coefficients)
    except CameraInfoError as error:
        raise RecordingError(f"{path}: {error}") from None
    return parts[0], coefficients


def _read_timestamps(path: Path) -> dict[str, int]:
    stamps = {}
    if path.exists():
        for line_number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            try:
                stamps[parts[0]] = int(parts[1])
            except (IndexError, ValueError):
                raise RecordingError(f"{path}:{line_number}: expected '<frame name> <stamp ns>'") from None
    return stamps


def _read_image(path: Path, flags: int) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), flags)
    if image is None:
        raise RecordingError(f"{path}: corrupt or unreadable image")
    return image


class FolderReader:
    """Frames of a folder recording; ``len()`` is the frame count, iterating yields Frames.

    intrinsics: overrides the folder's intrinsics files (rescaled to each image's size).
    """

    def __init__(self, path, intrinsics: Optional[Intrinsics] = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RecordingError(f"{self.path}: not a directory")
        self.intrinsics_override = intrinsics
        self.sequences: list[Path] = []
        if _frame_stems(self.path):
            self.sequences = [self.path]
        else:
            subdirs = sorted((p for p in self.path.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
            self.sequences = [p for p in subdirs if _frame_stems(p)]
        if not self.sequences:
            raise RecordingError(
                f"{self.path}: no frames found (expected files like frame-000000.color.png, here or in sub-folders)")
        self._frames = [(seq, stem, colour) for seq in self.sequences for stem, colour in _frame_stems(seq)]

    def __len__(self) -> int:
        return len(self._frames)

    def _intrinsics_for(self, sequence: Path, stem: str, width_px: int, height_px: int) -> Intrinsics:
        if self.intrinsics_override is not None:
            k = self.intrinsics_override
            return k if (k.width_px, k.height_px) == (width_px, height_px) else k.resized(width_px, height_px)
        for candidate in (sequence / f"{stem}.intrinsics.txt", sequence / "intrinsics.txt",
                          self.path / "intrinsics.txt"):
            if candidate.exists():
                return read_intrinsics_file(candidate, width_px, height_px)
        raise RecordingError(
            f"{sequence}: missing intrinsics: write intrinsics.txt (3x3 K or 'fx fy cx cy' in pixels) "
            f"or {stem}.intrinsics.txt")

    def _distortion_for(self, sequence: Path, stem: str) -> tuple[str, np.ndarray]:
        if self.intrinsics_override is None:
            for candidate in (sequence / f"{stem}.distortion.txt", sequence / "distortion.txt",
                              self.path / "distortion.txt"):
                if candidate.exists():
                    return read_distortion_file(candidate)
        return "plumb_bob", np.zeros(5)

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        undistorter = Undistorter()
        stamps_by_sequence = {seq: _read_timestamps(seq / "timestamps.txt") for seq in self.sequences}
        multi = len(self.sequences) > 1
        for index, (sequence, stem, colour_path) in enumerate(self._frames):
            bgr = _read_image(colour_path, cv2.IMREAD_COLOR)
            image = np.ascontiguousarray(bgr[:, :, ::-1])
            height, width = image.shape[:2]
            intrinsics = self._intrinsics_for(sequence, stem, width, height)
            camera = CameraModel(intrinsics, *self._distortion_for(sequence, stem))
            image = undistorter.undistort_rgb(image, camera)
            depth = None
            depth_path = sequence / f"{stem}.depth.png"
            if depth_path.exists():
                raw = _read_image(depth_path, cv2.IMREAD_UNCHANGED)
                if raw.dtype != np.uint16 or raw.ndim != 2:
                    raise RecordingError(f"{depth_path}: depth must be a 16-bit grey PNG in mm, got {raw.dtype} {raw.shape}")
                if raw.shape != (height, width):
                    raise RecordingError(f"{depth_path}: depth is {raw.shape[1]}x{raw.shape[0]}, image is {width}x{height}")
                depth = raw.astype(np.float32) * np.float32(1e-3)
                depth[raw == 65535] = 0.0  # 7-Scenes marks missing depth with 65535
                depth = undistorter.undistort_depth(depth, camera)
            pose = None
            pose_path = sequence / f"{stem}.pose.txt"
            if pose_path.exists():
                pose = _read_matrix(pose_path, (4, 4))
            stamp = stamps_by_sequence[sequence].get(stem)
            if stamp is None:
                stamp = index * DEFAULT_PERIOD_NS
            name = f"{sequence.name}/{stem}" if multi else stem
            yield Frame(image, intrinsics, int(stamp), depth, pose, name)


def _format_matrix(matrix: np.ndarray) -> str:
    return "\n".join(" ".join(f"{value:.17g}" for value in row) for row in np.asarray(matrix)) + "\n"


def _format_distortion(model: str, coefficients) -> str:
    return model + " " + " ".join(f"{float(value):.17g}" for value in coefficients) + "\n"


def write_folder(frames: Iterable[Frame], path, image_format: str = "png") -> int:
    """Write frames in the folder layout above; returns the number written.

    Frames are renamed frame-000000, frame-000001, ... in the given order. ``intrinsics.txt`` holds
    the first frame's intrinsics; frames with other intrinsics get their own file; lens
    distortion likewise (``distortion.txt``). Depth is stored
    in millimetres (rounded: 1 mm resolution, up to 65.534 m). Refuses a directory that already
    holds frames.
    """
    import cv2

    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be png or jpg, got {image_format!r}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    if _frame_stems(root):
        raise FileExistsError(f"{root} already holds frames; not overwriting")
    first_intrinsics = None
    first_lens = None
    stamps = []
    count = 0
    for index, frame in enumerate(frames):
        stem = f"frame-{index:06d}"
        image = np.asarray(frame.image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame {index}: image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
        if not cv2.imwrite(str(root / f"{stem}.color.{image_format}"), np.ascontiguousarray(image[:, :, ::-1])):
            raise OSError(f"could not write {root / f'{stem}.color.{image_format}'}")
        k = frame.intrinsics
        if first_intrinsics is None:
            first_intrinsics = k
            (root / "intrinsics.txt").write_text(_format_matrix(k.K))
        elif k.as_tuple() != first_intrinsics.as_tuple():
            (root / f"{stem}.intrinsics.txt").write_text(_format_matrix(k.K))
        lens = (frame.distortion_model, tuple(frame.distortion)) if frame.is_distorted else None
        if index == 0:
            first_lens = lens
            if lens is not None:
                (root / "distortion.txt").write_text(_format_distortion(*lens))
        elif lens != first_lens:
            (root / f"{stem}.distortion.txt").write_text(_format_distortion(*(lens or ("plumb_bob", (0.0,) * 5))))
        if frame.depth_m is not None:
            depth = np.asarray(frame.depth_m, np.float64)
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
            millimetres = np.clip(np.round(depth * 1000.0), 0, 65534).astype(np.uint16)
            cv2.imwrite(str(root / f"{stem}.depth.png"), millimetres)
        if frame.world_T_cam is not None:
            (root / f"{stem}.pose.txt").write_text(_format_matrix(frame.world_T_cam))
        stamps.append(f"{stem} {int(frame.stamp_ns)}")
        count += 1
    (root / "timestamps.txt").write_text("\n".join(stamps) + ("\n" if stamps else ""))
    return count
