"""7-Scenes and 12-Scenes sequences as released: colour, unregistered depth, depth-camera poses.

A scene folder holds ``seq-01/``, ``seq-02/``, ... (7-Scenes, with ``TrainSplit.txt`` /
``TestSplit.txt`` naming ``sequence1`` ...) or a sequence folder is given directly. Each frame is
``frame-XXXXXX.color.{png,jpg}``, ``frame-XXXXXX.depth.png`` (uint16 mm; invalid 0 or 65535) and
``frame-XXXXXX.pose.txt`` (4x4). 7-Scenes ships no calibration file; its facts are
``SEVEN_SCENES`` below. 12-Scenes writes ``info.txt`` (its colour and depth intrinsics), read by
``read_info_file``. A folder that holds neither our ``intrinsics.txt`` nor ``info.txt`` is read
with the 7-Scenes facts only after its colour images were checked to be 640x480.

What the reader yields (pinhole ``Frame``s, as every reader):
  - ``depth_m`` registered to the colour camera: depth pixels back-projected with the depth K,
    moved by ``depth_T`` (``X_rgb = rgb_T_depth @ X_depth``), projected with the colour K, the
    nearest surface kept per colour pixel;
  - ``world_T_cam`` of the colour camera: ``world_T_depth @ inv(rgb_T_depth)``, its rotation
    projected onto SO(3) (the release's rotations are orthonormal to 2e-4 only).
Frames whose pose is not finite (12-Scenes marks lost tracking with ``-inf``) are skipped and
counted in ``skipped_without_pose``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from dsac_ros.camera import Intrinsics
from dsac_ros.data.errors import RecordingError
from dsac_ros.data.folder import DEFAULT_PERIOD_NS, _frame_stems, _natural_key, _read_image
from dsac_ros.frame import Frame

RIGID_TOLERANCE = 1e-3  # |R R^T - I| of a calibration's rotation; the Kinect one is orthonormal to 1e-8


@dataclass(frozen=True)
class DepthCalibration:
    """Colour and depth cameras of an RGB-D sensor whose depth is not registered.

    colour / depth: pinhole intrinsics of each image; rgb_T_depth: (4, 4) rigid transform taking
    depth-camera points to colour-camera points (metres); depth_scale_m: metres per depth unit.
    """

    colour: Intrinsics
    depth: Intrinsics
    rgb_T_depth: np.ndarray
    depth_scale_m: float = 1e-3
    source: str = ""

    def __post_init__(self) -> None:
        transform = np.asarray(self.rgb_T_depth, dtype=np.float64)
        where = f" ({self.source})" if self.source else ""
        if transform.shape != (4, 4) or not np.all(np.isfinite(transform)):
            raise RecordingError(f"calibration{where}: rgb_T_depth must be a finite 4x4 matrix")
        rotation = transform[:3, :3]
        if (np.abs(rotation @ rotation.T - np.eye(3)).max() > RIGID_TOLERANCE or np.linalg.det(rotation) < 0
                or not np.allclose(transform[3], [0, 0, 0, 1])):
            raise RecordingError(f"calibration{where}: rgb_T_depth is not a rigid transform (rotation not "
                                 f"orthonormal within {RIGID_TOLERANCE}, or last row not 0 0 0 1)")
        if np.linalg.norm(transform[:3, 3]) > 0.5:
            raise RecordingError(f"calibration{where}: colour and depth cameras {np.linalg.norm(transform[:3, 3]):.2f} m "
                                 "apart; expected centimetres (is the translation in millimetres?)")
        if not 0 < self.depth_scale_m < 1:
            raise RecordingError(f"calibration{where}: depth scale {self.depth_scale_m} m per unit is implausible")


# Kinect v1 as DSAC*, ACE and the pseudo ground truth studies use it (facts from the dataset's use,
# see ../shared/real/7scenes-redkitchen/README.md): colour f 525, depth f 585, both centred.
SEVEN_SCENES = DepthCalibration(
    colour=Intrinsics(525.0, 525.0, 320.0, 240.0, 640, 480),
    depth=Intrinsics(585.0, 585.0, 320.0, 240.0, 640, 480),
    rgb_T_depth=np.array([
        [0.99996518012567637, 0.0026765126468950343, -0.0079041012313000904, -0.025558943178152542],
        [-0.0027409311281316700, 0.99996302803027592, -0.0081504520778013286, 0.00010109636268061706],
        [0.0078819942130445332, 0.0081718328771890631, 0.99993554558014031, 0.0020318321729487039],
        [0.0, 0.0, 0.0, 1.0]]),
    source="7-Scenes Kinect v1 facts")


def nearest_rotation(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) -> the closest proper rotation (SVD projection onto SO(3))."""
    u, _, vt = np.linalg.svd(rotation)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def register_depth(depth_m: np.ndarray, calibration: DepthCalibration) -> np.ndarray:
    """Depth-camera depth (Hd, Wd) float32 m -> depth in the colour camera (Hc, Wc) float32 m, 0 = none.

    Forward warp: each valid depth pixel lands on its nearest colour pixel; where several land on
    one, the nearest surface wins (a z-buffer), so foreground edges never show the background.
    """
    depth_k, colour_k = calibration.depth, calibration.colour
    if depth_m.shape != (depth_k.height_px, depth_k.width_px):
        raise RecordingError(f"depth image is {depth_m.shape[1]}x{depth_m.shape[0]}, the calibration's depth camera "
                             f"{depth_k.width_px}x{depth_k.height_px}")
    v, u = np.nonzero(np.isfinite(depth_m) & (depth_m > 0))
    z = depth_m[v, u].astype(np.float64)
    points = np.stack([(u - depth_k.cx_px) * z / depth_k.fx_px, (v - depth_k.cy_px) * z / depth_k.fy_px, z], axis=1)
    transform = np.asarray(calibration.rgb_T_depth, dtype=np.float64)
    points = points @ transform[:3, :3].T + transform[:3, 3]
    z_rgb = points[:, 2]
    front = z_rgb > 1e-3
    points, z_rgb = points[front], z_rgb[front]
    x = np.rint(colour_k.fx_px * points[:, 0] / z_rgb + colour_k.cx_px).astype(np.int64)
    y = np.rint(colour_k.fy_px * points[:, 1] / z_rgb + colour_k.cy_px).astype(np.int64)
    inside = (x >= 0) & (x < colour_k.width_px) & (y >= 0) & (y < colour_k.height_px)
    flat = y[inside] * colour_k.width_px + x[inside]
    z_rgb = z_rgb[inside]
    # Far to near, so the last write to a pixel (numpy keeps the last of repeated indices in a
    # plain assignment of a sorted order) is the nearest surface.
    order = np.argsort(-z_rgb, kind="stable")
    registered = np.zeros(colour_k.height_px * colour_k.width_px, dtype=np.float32)
    registered[flat[order]] = z_rgb[order]
    return registered.reshape(colour_k.height_px, colour_k.width_px)


def _matrix_from_info(value: str, path: Path, key: str) -> np.ndarray:
    try:
        numbers = np.array([float(x) for x in value.split()], dtype=np.float64)
    except ValueError:
        raise RecordingError(f"{path}: {key} must be 16 numbers") from None
    if numbers.size != 16:
        raise RecordingError(f"{path}: {key} must be 16 numbers, found {numbers.size}")
    return numbers.reshape(4, 4)


def read_info_file(path: Path) -> DepthCalibration:
    """12-Scenes' ``info.txt`` (``m_colorWidth = 1296``, ``m_calibrationColorIntrinsic = 16 numbers``, ...)."""
    entries = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            entries[key.strip()] = value.strip()
    needed = ("m_colorWidth", "m_colorHeight", "m_depthWidth", "m_depthHeight", "m_calibrationColorIntrinsic",
              "m_calibrationDepthIntrinsic")
    missing = [key for key in needed if key not in entries]
    if missing:
        raise RecordingError(f"{path}: missing {', '.join(missing)}")

    def intrinsics(key: str, width: str, height: str) -> Intrinsics:
        K = _matrix_from_info(entries[key], path, key)
        try:
            return Intrinsics.from_K(K[:3, :3], int(entries[width]), int(entries[height]))
        except ValueError as error:
            raise RecordingError(f"{path}: {key}: {error}") from None

    colour_extrinsic = _matrix_from_info(entries.get("m_calibrationColorExtrinsic", " ".join(map(str, np.eye(4).ravel()))),
                                         path, "m_calibrationColorExtrinsic")
    depth_extrinsic = _matrix_from_info(entries.get("m_calibrationDepthExtrinsic", " ".join(map(str, np.eye(4).ravel()))),
                                        path, "m_calibrationDepthExtrinsic")
    try:
        shift = float(entries.get("m_depthShift", "1000"))
    except ValueError:
        raise RecordingError(f"{path}: m_depthShift must be a number") from None
    if shift <= 0:
        raise RecordingError(f"{path}: m_depthShift must be positive, got {shift}")
    # Both extrinsics are sensor-to-rig; a depth point goes to the rig, then to the colour camera.
    return DepthCalibration(colour=intrinsics("m_calibrationColorIntrinsic", "m_colorWidth", "m_colorHeight"),
                            depth=intrinsics("m_calibrationDepthIntrinsic", "m_depthWidth", "m_depthHeight"),
                            rgb_T_depth=np.linalg.inv(colour_extrinsic) @ depth_extrinsic,
                            depth_scale_m=1.0 / shift, source=str(path))


def parse_frame_ranges(text: str) -> list[tuple[int, int]]:
    """'0-199,300-599,700' -> [(0, 199), (300, 599), (700, 700)] (inclusive frame numbers)."""
    ranges = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise RecordingError(f"frame range {part!r}: expected N or N-M (inclusive), e.g. 0-199,300-599")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise RecordingError(f"frame range {part!r}: the end is before the start")
        ranges.append((first, last))
    if not ranges:
        raise RecordingError(f"frame ranges {text!r}: none given")
    return ranges


def _frame_number(stem: str) -> int:
    digits = re.findall(r"\d+", stem)
    return int(digits[-1]) if digits else -1


def read_split_file(path: Path) -> tuple[set[int], set[str]]:
    """A split file: 7-Scenes' ``TrainSplit.txt`` / ``TestSplit.txt`` (``sequence1`` per line) gives
    sequence numbers; any other line names a frame (``seq-01/frame-000200`` or ``frame-000200``)."""
    sequences, frames = set(), set()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise RecordingError(f"{path}: cannot read the split file ({error})") from None
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"sequence\s*(\d+)", line, flags=re.IGNORECASE)
        if match:
            sequences.add(int(match.group(1)))
        else:
            frames.add(re.sub(r"\.(color|depth|pose)\.\w+$", "", line))
    if not sequences and not frames:
        raise RecordingError(f"{path}: the split file names no sequence or frame")
    return sequences, frames


def looks_like_seven_scenes(path: Path) -> bool:
    """A folder of frame-*.color/depth/pose files (or seq-* folders of them) without our intrinsics.txt."""
    path = Path(path)
    if not path.is_dir() or (path / "intrinsics.txt").exists():
        return False
    sequences = [path] if _frame_stems(path) else [p for p in path.iterdir() if p.is_dir() and _frame_stems(p)]
    if not sequences or any((s / "intrinsics.txt").exists() for s in sequences):
        return False
    first = sequences[0]
    stem = _frame_stems(first)[0][0]
    return (first / f"{stem}.pose.txt").exists()


class SevenScenesReader:
    """Frames of a 7-Scenes / 12-Scenes scene or sequence folder; ``len()`` counts the selected frames.

    frames: inclusive frame-number ranges to keep ('0-199,300-599'); split: a split file
    (``read_split_file``) or the name of one in the scene folder ('TrainSplit.txt'); calibration:
    overrides the sequence's own (``info.txt``) or the 7-Scenes facts; depth: False skips depth.
    """

    def __init__(self, path, frames: Optional[str] = None, split: Optional[str] = None,
                 calibration: Optional[DepthCalibration] = None, depth: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RecordingError(f"{self.path}: not a directory")
        if _frame_stems(self.path):
            sequences = [self.path]
        else:
            sequences = sorted((p for p in self.path.iterdir() if p.is_dir() and _frame_stems(p)),
                               key=lambda p: _natural_key(p.name))
        if not sequences:
            raise RecordingError(f"{self.path}: no frames found (expected frame-000000.color.png/.jpg, here or in "
                                 "seq-NN/ folders)")
        keep_sequences, keep_frames = None, None
        if split:
            split_path = Path(split) if Path(split).exists() else self.path / split
            if not split_path.exists():
                raise RecordingError(f"split file {split}: not found (neither a path nor a file in {self.path})")
            keep_sequences, keep_frames = read_split_file(split_path)
        ranges = parse_frame_ranges(frames) if frames else None
        self.calibration_override = calibration
        self.with_depth = depth
        self._frames: list[tuple[Path, str, Path]] = []
        for sequence in sequences:
            number = _frame_number(sequence.name)
            if keep_sequences and number not in keep_sequences and not keep_frames:
                continue
            for stem, colour in _frame_stems(sequence):
                if keep_frames and not ({stem, f"{sequence.name}/{stem}"} & keep_frames) \
                        and not (keep_sequences and number in keep_sequences):
                    continue
                if ranges and not any(a <= _frame_number(stem) <= b for a, b in ranges):
                    continue
                self._frames.append((sequence, stem, colour))
        if not self._frames:
            raise RecordingError(f"{self.path}: the frame selection (frames={frames!r}, split={split!r}) keeps no frame")
        self.sequences = sorted({s for s, _, _ in self._frames}, key=lambda p: _natural_key(p.name))
        self.skipped_without_pose = 0

    def __len__(self) -> int:
        return len(self._frames)

    def calibration_for(self, sequence: Path, width_px: int, height_px: int) -> DepthCalibration:
        """The sequence's calibration, checked against its colour image size."""
        calibration = self.calibration_override
        if calibration is None:
            for candidate in (sequence / "info.txt", self.path / "info.txt"):
                if candidate.exists():
                    calibration = read_info_file(candidate)
                    break
        if calibration is None:
            calibration = SEVEN_SCENES
            if (width_px, height_px) != (640, 480):
                raise RecordingError(
                    f"{sequence}: missing intrinsics: no intrinsics.txt (our folder format, registered depth) or "
                    f"info.txt (12-Scenes), and the colour images are {width_px}x{height_px}, not the 640x480 of "
                    "7-Scenes' Kinect, whose calibration facts would apply")
        colour = calibration.colour
        if (colour.width_px, colour.height_px) != (width_px, height_px):
            raise RecordingError(
                f"{sequence}: colour images are {width_px}x{height_px}, the calibration ({calibration.source or 'given'}) "
                f"is for {colour.width_px}x{colour.height_px}: not a 7-Scenes sequence; give its calibration "
                "(12-Scenes: info.txt; our folder format: intrinsics.txt with registered depth)")
        return calibration

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        for sequence, stem, colour_path in self._frames:
            pose_path = sequence / f"{stem}.pose.txt"
            if not pose_path.exists():
                raise RecordingError(f"{pose_path}: missing (every 7-Scenes frame has a pose)")
            try:
                world_T_depth = np.loadtxt(pose_path, dtype=np.float64, ndmin=1).reshape(-1)
            except (ValueError, OSError) as error:
                raise RecordingError(f"{pose_path}: cannot read numbers ({error})") from None
            if world_T_depth.size != 16:
                raise RecordingError(f"{pose_path}: expected 4x4 numbers, found {world_T_depth.size}")
            if not np.all(np.isfinite(world_T_depth)):
                self.skipped_without_pose += 1  # lost tracking (12-Scenes writes -inf)
                continue
            world_T_depth = world_T_depth.reshape(4, 4)
            bgr = _read_image(colour_path, cv2.IMREAD_COLOR)
            image = np.ascontiguousarray(bgr[:, :, ::-1])
            calibration = self.calibration_for(sequence, image.shape[1], image.shape[0])
            rotation = world_T_depth[:3, :3]
            if np.abs(rotation @ rotation.T - np.eye(3)).max() > 0.01:
                raise RecordingError(f"{pose_path}: not a rigid transform (rotation off orthonormal by "
                                     f"{np.abs(rotation @ rotation.T - np.eye(3)).max():.3f})")
            world_T_depth[:3, :3] = nearest_rotation(rotation)
            world_T_cam = world_T_depth @ np.linalg.inv(calibration.rgb_T_depth)
            depth = None
            depth_path = sequence / f"{stem}.depth.png"
            if self.with_depth and depth_path.exists():
                raw = _read_image(depth_path, cv2.IMREAD_UNCHANGED)
                if raw.dtype != np.uint16 or raw.ndim != 2:
                    raise RecordingError(f"{depth_path}: depth must be a 16-bit grey PNG, got {raw.dtype} {raw.shape}")
                depth_m = raw.astype(np.float32) * np.float32(calibration.depth_scale_m)
                depth_m[(raw == 0) | (raw == 65535)] = 0.0
                try:
                    depth = register_depth(depth_m, calibration)
                except RecordingError as error:
                    raise RecordingError(f"{depth_path}: {error}") from None
            name = stem if sequence == self.path else f"{sequence.name}/{stem}"
            stamp_ns = (_frame_number(sequence.name) * 1_000_000 + _frame_number(stem)) * DEFAULT_PERIOD_NS
            yield Frame(image, calibration.colour, int(stamp_ns), depth, world_T_cam, name)

