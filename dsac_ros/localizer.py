"""The one entry point the ROS node and evaluation call: image (+ intrinsics, depth) -> camera pose.

    localizer = Localizer("scene.pt", device="auto", ransac=RansacOptions(hypotheses=64))
    result = localizer.localize(image_rgb, intrinsics)        # LocalizationResult, never raises on data
    if result.success: use(result.world_T_cam, result.covariance_6x6)
    # options per call, as in PoseLib; the localizer and its map are never changed by a call:
    result = localizer.localize(image_rgb, intrinsics, ransac=RansacOptions(hypotheses=16), retrieve_frames=4, seed=7)
    result = localizer.localize(image_rgb, intrinsics, covariance_floor=CovarianceFloor(0.01, 0.5))

The network predicts one scene coordinate per 8x8 cell of the resized image; the cell centres are
mapped back to the caller's pixels (``dsac_ros.network.cell_centers_px``) so DSAC runs with the
caller's intrinsics, and its pixel thresholds are in the caller's pixels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dsac_ros.camera import Intrinsics
from dsac_ros.covariance import CovarianceFloor, apply_floor
from dsac_ros.depth_alignment import DepthAlignment, DepthAlignmentOptions, align_to_depth
from dsac_ros.device import describe_device, resolve_device, torch_threads
from dsac_ros.dsac import RansacOptions, estimate_pose
from dsac_ros.inference import make_encoder_runner
from dsac_ros.mapfile import SceneMap, load_map
from dsac_ros.memory_head import strided_lookup
from dsac_ros.network import OUTPUT_STRIDE, backproject_depth_at, prepare_input
from dsac_ros.status import Status
from dsac_ros.subcell import subcell_offsets

logger = logging.getLogger(__name__)

# Memory maps: mapping frames searched for an RGB-D frame with depth alignment, unless a caller
# or the localizer says otherwise (RGB frames search the map's own number, 8).
RGBD_RETRIEVE_FRAMES = 4

# Below this the image cannot hold a single useful cell of context.
MIN_IMAGE_SIDE_PX = 2 * OUTPUT_STRIDE


@dataclass
class LocalizationResult:
    """The outcome of one ``localize`` call. Never holds NaN or inf.

    status: ``Status.OK`` (pose found), ``LOST`` (DSAC found no pose with enough support),
    ``BAD_INPUT`` (the frame itself is unusable); reason explains anything but OK. world_T_cam (4, 4) float64 and
    covariance_6x6 (x, y, z, rot X, rot Y, rot Z in the world frame; m^2, rad^2) are None unless OK.
    inlier_ratio = inlier_count / correspondences (the cells with a prediction).
    timings_ms: "network" (= "prepare" (grey, resize, normalise) + "encoder" + "lookup" (the scene
    head)), "ransac", "total"; ransac_timings_ms: the core's own split (sampling, scoring,
    refinement, total); device: where the network ran; backend: which runtime ran the encoder.
    depth_alignment: RGB-D frames, the point-to-plane alignment of the map's points to the frame's
    depth after DSAC (``dsac_ros.depth_alignment``; timings_ms "alignment"), None without depth;
    retrieve_frames: memory maps, how many mapping frames this frame's lookup searched.
    """

    success: bool
    status: Status
    reason: str = ""
    world_T_cam: Optional[np.ndarray] = None
    covariance_6x6: Optional[np.ndarray] = None
    inlier_count: int = 0
    inlier_ratio: float = 0.0
    score: float = 0.0
    hypotheses_valid: int = 0
    correspondences: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    device: str = ""
    ransac_timings_ms: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    depth_alignment: Optional[DepthAlignment] = None
    retrieve_frames: Optional[int] = None  # memory maps: the mapping frames searched for this frame


class Localizer:
    """A map on a device, with default DSAC settings; every call may pass its own.

    scene_map: a map file path or a loaded ``SceneMap``; device: auto | cpu | cuda | cuda:N
    (DeviceError if unavailable); ransac: the default ``RansacOptions`` of calls that pass none
    (``localize(..., ransac=...)`` overrides them for one call, as PoseLib's options do; a caller
    never changes the localizer or its map, so one localizer serves several threads' settings).
    retrieve_frames: memory maps, the default number of mapping frames searched (None: the
    map's, and ``RGBD_RETRIEVE_FRAMES`` for frames with depth and alignment). input_height_px overrides the map's network input height (a multiple of 8): smaller
    is faster and coarser. covariance_floor: the default ``CovarianceFloor`` under every
    published covariance (after the map's calibration). num_threads, if given, sets
    torch's CPU thread count for the whole process (torch has no per-model setting): on a loaded
    machine one thread avoids threads spin-waiting on each other (see bench/bench_localizer.py).
    backend: who runs the encoder, auto | torch | onnxruntime (``dsac_ros.inference``; BackendError
    if an explicit one cannot run here; ``backend_note`` says why auto chose what it did).
    depth_alignment: the default ``DepthAlignmentOptions`` of RGB-D frames (enabled: DSAC's pose is
    refined against the frame's depth, beyond the cell grid's precision). subcell: memory maps, each
    correspondence's pixel moved to where its matched key peaks in the query's cell grid
    (``dsac_ros.subcell``) instead of the cell centre.
    Raises MapFileError for a bad map; data problems of a frame never raise.
    """

    def __init__(self, scene_map: str | Path | SceneMap, device: str | torch.device = "auto",
                 ransac: RansacOptions | None = None, input_height_px: int | None = None,
                 num_threads: int | None = None, retrieve_frames: int | None = None,
                 covariance_floor: CovarianceFloor = CovarianceFloor(), backend: str = "auto",
                 depth_alignment: DepthAlignmentOptions = DepthAlignmentOptions(), subcell: bool = True) -> None:
        self.map = scene_map if isinstance(scene_map, SceneMap) else load_map(scene_map)
        if num_threads is not None:
            if int(num_threads) < 1:
                raise ValueError(f"num_threads must be at least 1, got {num_threads}")
            torch.set_num_threads(int(num_threads))
        self.device = resolve_device(device)
        self.device_name = describe_device(self.device)
        # channels_last: same results, 15-25 % faster convolutions on this CPU (bench/bench_localizer.py).
        self.network = self.map.network.to(self.device).eval().to(memory_format=torch.channels_last)
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        height = self.map.input_height_px if not input_height_px else int(input_height_px)
        if height <= 0 or height % OUTPUT_STRIDE:
            raise ValueError(f"input_height_px must be a positive multiple of {OUTPUT_STRIDE}, got {height}")
        self.input_height_px = height
        self.encoder_runner = make_encoder_runner(self.network.encoder, backend, self.device,
                                                  threads=num_threads, log=logger.warning)
        self.ransac = ransac if ransac is not None else RansacOptions()
        self.retrieve_frames = self._checked_retrieve_frames(retrieve_frames)
        self.covariance_floor = self._checked_floor(covariance_floor)
        self.depth_alignment = self._checked_alignment(depth_alignment)
        self.subcell = bool(subcell)
        # Depth alignment serves maps with a key on every cell. Maps with strided keys (480 px, the
        # memory default) place matches on the fine grid, and there DSAC's RGB-D pose was better
        # without it on real Kinect depth (7-Scenes split, 100 frames: 100 / 76 / 31 % within
        # 5 / 2 / 1 cm without, 97 / 57 / 38 % with): those frames keep DSAC's pose.
        self.aligns_depth = int(getattr(self.network.head, "key_stride", 1)) == 1
        # Calibration of the inlier-residual covariance, fitted when the map was made on held-out
        # frames (dsac_ros.evaluation.covariance_scale); maps without one keep the raw covariance.
        validation = self.map.training.get("validation") or {}
        scale = validation.get("covariance_scale") if isinstance(validation, dict) else None
        self.covariance_scale = float(scale) if isinstance(scale, (int, float)) and np.isfinite(scale) and scale >= 1 \
            else 1.0
        logger.info("localizer: map %s (%s network, input height %d px) on %s, encoder backend %s",
                    self.map.path or "<in memory>", self.map.network_config.get("name", "custom"),
                    self.input_height_px, self.device_name, self.encoder_runner.describe())

    @property
    def backend(self) -> str:
        """The runtime running the encoder: "torch" or "onnxruntime"."""
        return self.encoder_runner.name

    @property
    def backend_note(self) -> str:
        """Why "auto" chose ``backend`` when it is not its first choice (e.g. onnxruntime missing), else ''."""
        return self.encoder_runner.note

    @property
    def ransac(self) -> RansacOptions:
        """The default RANSAC options of calls that pass none."""
        return self._ransac

    @ransac.setter
    def ransac(self, options: RansacOptions) -> None:
        self._ransac = self._checked_ransac(options)

    @property
    def map_retrieve_frames(self) -> Optional[int]:
        """Memory maps: the map's own retrieval count; None for MLP maps."""
        return getattr(self.network.head, "retrieve_frames", None)

    def _checked_retrieve_frames(self, frames: Optional[int]) -> Optional[int]:
        if frames is not None and int(frames) < 1:
            raise ValueError(f"retrieve_frames must be at least 1 (or None for the map's), got {frames}")
        return None if frames is None else int(frames)

    def _frames_searched(self, retrieve_frames: Optional[int], aligned_depth: bool) -> Optional[int]:
        """Memory maps: the mapping frames one lookup searches (None for other heads): the call's,
        else the localizer's, else the map's, at most ``RGBD_RETRIEVE_FRAMES`` for a frame whose
        pose the depth alignment refines (it makes up for fewer correspondences: rgbd, 640x480, 4
        frames instead of 8 kept small_room / large_room at 100 % within 2 cm / 2 deg, 37.4 -> 29.2 ms)."""
        frames = self._checked_retrieve_frames(retrieve_frames) or self.retrieve_frames
        if self.map_retrieve_frames is None or frames is not None:
            return frames
        return min(RGBD_RETRIEVE_FRAMES, self.map_retrieve_frames) if aligned_depth else self.map_retrieve_frames

    @staticmethod
    def _checked_floor(floor: CovarianceFloor) -> CovarianceFloor:
        if not isinstance(floor, CovarianceFloor):
            raise TypeError(f"covariance_floor must be CovarianceFloor, got {type(floor).__name__}")
        return floor

    @staticmethod
    def _checked_alignment(options: DepthAlignmentOptions) -> DepthAlignmentOptions:
        if not isinstance(options, DepthAlignmentOptions):
            raise TypeError(f"depth_alignment must be DepthAlignmentOptions, got {type(options).__name__}")
        return options

    @staticmethod
    def _checked_ransac(options: RansacOptions) -> RansacOptions:
        if not isinstance(options, RansacOptions):
            raise TypeError(f"ransac must be RansacOptions, got {type(options).__name__}")
        return options

    def ransac_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self._ransac, f.name) for f in fields(self._ransac)}

    # --- prediction ---------------------------------------------------------------------------

    def predict(self, image_rgb: np.ndarray, retrieve_frames: Optional[int] = None, subcell: Optional[bool] = None
                ) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
        """Scene coordinates of an image (no input checks; see ``localize``).

        Returns coords_world (N, 3) float32 on the localizer's device, pixels_xy (N, 2) float64
        image pixels of the correspondences (row-major over cells: the cell centres, moved within
        their cell by the sub-cell step), and the grid (cells_h, cells_w).
        retrieve_frames: memory maps, frames searched (None: the localizer's default, else the map's);
        subcell: memory maps, the sub-cell step (None: the localizer's).
        """
        coords, pixels_xy, grid_hw, _ = self._predict_timed(image_rgb, self._frames_searched(retrieve_frames, False),
                                                            subcell)
        return coords, pixels_xy, grid_hw

    def _predict_timed(self, image_rgb: np.ndarray, frames: Optional[int], subcell: Optional[bool] = None
                       ) -> tuple[torch.Tensor, np.ndarray, tuple[int, int], dict[str, float]]:
        """``predict`` with the frames searched resolved (``_frames_searched``), plus its stage
        times in ms: prepare, encoder, lookup."""
        t0 = time.perf_counter()
        prepared = prepare_input(image_rgb, self.input_height_px, self.map.normalization)
        t1 = time.perf_counter()
        features = self.encoder_runner(prepared.tensor)
        self._sync()
        t2 = time.perf_counter()
        cells_w, cells_h = prepared.cells_size
        pixels_xy = prepared.cell_centers_px()
        head = self.network.head
        stride = int(getattr(head, "key_stride", 1))
        cell_px = OUTPUT_STRIDE * np.asarray(prepared.image_size, dtype=np.float64) / prepared.input_size
        with torch.inference_mode():
            if stride > 1:
                cells = features[0].permute(1, 2, 0).float().contiguous()  # (h, w, C)
                offsets, grid_xy, (cells_h, cells_w) = strided_lookup(
                    head, cells, frames, self.subcell if subcell is None else subcell)
                coords_world = offsets + self.network.scene_center_m.reshape(1, 3)
                pixels_xy = pixels_xy[0] + grid_xy.double().cpu().numpy() * cell_px
            elif (self.subcell if subcell is None else subcell) and hasattr(head, "matched_keys"):
                # (h, w, C), contiguous: the sub-cell step's shifted views of a strided permute ran 1-2 ms slower
                cells = features[0].permute(1, 2, 0).float().contiguous()
                flat = cells.reshape(cells_h * cells_w, -1)
                offsets, index = head.lookup(flat, return_index=True, retrieve_frames=frames)
                coords_world = offsets + self.network.scene_center_m.reshape(1, 3)
                shift_cells = subcell_offsets(cells, head.matched_keys(index).reshape(cells.shape))
                pixels_xy = pixels_xy + shift_cells.reshape(-1, 2).double().cpu().numpy() * cell_px
            else:
                coords = self.network.coords_from_features(features, retrieve_frames=frames)[0]  # (3, h, w)
                coords_world = coords.reshape(3, -1).T
        self._sync()
        t3 = time.perf_counter()
        timings = {"prepare": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3, "lookup": (t3 - t2) * 1e3}
        return coords_world, pixels_xy, (cells_h, cells_w), timings

    # --- the entry point ----------------------------------------------------------------------

    def localize(self, image_rgb: np.ndarray, intrinsics: Intrinsics, depth_m: Optional[np.ndarray] = None,
                 *, ransac: Optional[RansacOptions] = None, retrieve_frames: Optional[int] = None,
                 seed: Optional[int] = None, covariance_floor: Optional[CovarianceFloor] = None,
                 depth_alignment: Optional[DepthAlignmentOptions] = None, subcell: Optional[bool] = None
                 ) -> LocalizationResult:
        """Camera pose of one frame.

        image_rgb: (H, W, 3) uint8 RGB (or (H, W) uint8 grayscale); intrinsics: of this image
        (width_px, height_px must be W, H); depth_m: optional (H, W) float metres registered to the
        image (0 / NaN = no depth) for RGB-D hypotheses. For this call only: ransac (default: the
        localizer's), retrieve_frames (memory maps; default: the localizer's, else the map's, at most
        ``RGBD_RETRIEVE_FRAMES`` for depth with alignment) and
        seed (makes the RANSAC draw reproducible; overrides ``ransac.seed``), covariance_floor,
        depth_alignment and subcell (defaults: the localizer's).
        """
        start = time.perf_counter()
        options = self._ransac if ransac is None else self._checked_ransac(ransac)
        floor = self.covariance_floor if covariance_floor is None else self._checked_floor(covariance_floor)
        alignment = self.depth_alignment if depth_alignment is None else self._checked_alignment(depth_alignment)
        problem = self._check_input(image_rgb, intrinsics, depth_m)
        if problem:
            return self._result(False, Status.BAD_INPUT, problem, start, {})

        frames = self._frames_searched(retrieve_frames, depth_m is not None and alignment.enabled and self.aligns_depth)
        coords_world, pixels_xy, grid_hw, stage_ms = self._predict_timed(image_rgb, frames, subcell)
        network_ms = (time.perf_counter() - start) * 1e3
        coords_cam = None
        if depth_m is not None:
            points_cam, valid = backproject_depth_at(np.asarray(depth_m), intrinsics, pixels_xy)
            points_cam[~valid] = np.nan  # the core ignores rows without depth
            coords_cam = torch.as_tensor(points_cam, device=self.device)
        if seed is not None:
            options = replace(options, seed=int(seed))
        result = localize_coordinates(coords_world, torch.as_tensor(pixels_xy, device=self.device), intrinsics,
                                      options, coords_cam=coords_cam, grid_hw=grid_hw)
        if depth_m is not None and result.success and not self.aligns_depth:
            result.depth_alignment = DepthAlignment(result.world_T_cam.copy(), False,
                                                    reason="not used with this map's strided keys")
        elif depth_m is not None and result.success:
            t_align = time.perf_counter()
            result.depth_alignment = align_to_depth(result.world_T_cam, coords_world.double().cpu().numpy(),
                                                    np.asarray(depth_m), intrinsics, alignment)
            result.world_T_cam = result.depth_alignment.world_T_cam
            result.timings_ms["alignment"] = (time.perf_counter() - t_align) * 1e3
        if result.covariance_6x6 is not None:
            # Finite here (localize_coordinates drops a non-finite one): calibrate, then floor.
            result.covariance_6x6 = apply_floor(result.covariance_6x6 * self.covariance_scale, floor)
        result.timings_ms.update(stage_ms)
        result.timings_ms["network"] = network_ms
        result.timings_ms["total"] = (time.perf_counter() - start) * 1e3
        result.backend = self.backend
        result.retrieve_frames = frames
        return result

    # --- helpers ------------------------------------------------------------------------------

    def _result(self, success: bool, status: Status, reason: str, start: float, timings: dict[str, float],
                **values: Any) -> LocalizationResult:
        timings = dict(timings)
        timings.setdefault("network", 0.0)
        timings.setdefault("ransac", 0.0)
        timings["total"] = (time.perf_counter() - start) * 1e3
        return LocalizationResult(success, status, reason, timings_ms=timings, device=str(self.device),
                                  backend=self.backend, **values)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def _check_input(image_rgb: Any, intrinsics: Any, depth_m: Any) -> str:
        """'' when the frame is usable, else the reason it is not."""
        if not isinstance(image_rgb, np.ndarray):
            return f"image must be a numpy array, got {type(image_rgb).__name__}"
        if image_rgb.dtype != np.uint8:
            return f"image must be uint8, got {image_rgb.dtype}"
        if not (image_rgb.ndim == 3 and image_rgb.shape[2] == 3) and image_rgb.ndim != 2:
            return f"image must be (H, W, 3) RGB or (H, W) gray, got shape {image_rgb.shape}"
        height, width = image_rgb.shape[:2]
        if min(height, width) < MIN_IMAGE_SIDE_PX:
            return f"image is {width}x{height}: both sides must be at least {MIN_IMAGE_SIDE_PX} px"
        if not isinstance(intrinsics, Intrinsics):
            return f"intrinsics must be dsac_ros.camera.Intrinsics, got {type(intrinsics).__name__}"
        if (intrinsics.width_px, intrinsics.height_px) != (width, height):
            return (f"intrinsics are for {intrinsics.width_px}x{intrinsics.height_px} but the image is "
                    f"{width}x{height}: rescale them with Intrinsics.resized")
        low, high = int(image_rgb.min()), int(image_rgb.max())
        if low == high:
            black = ", all black" if high == 0 else ""
            return f"image is uniform (every pixel {low}{black}): nothing to localise against"
        if depth_m is not None:
            if not isinstance(depth_m, np.ndarray) or depth_m.shape != (height, width):
                shape = getattr(depth_m, "shape", type(depth_m).__name__)
                return f"depth must be an (H, W) = ({height}, {width}) array registered to the image, got {shape}"
            if not np.issubdtype(depth_m.dtype, np.floating):
                return f"depth must be float metres, got {depth_m.dtype} (convert millimetres with / 1000)"
            if not np.any(np.isfinite(depth_m) & (depth_m > 0)):
                return "depth has no valid pixels (all zero, negative or NaN)"
        return ""


def localize_coordinates(coords_world: torch.Tensor, pixels_xy: torch.Tensor, intrinsics: Intrinsics,
                         options: RansacOptions, coords_cam: Optional[torch.Tensor] = None,
                         grid_hw: Optional[tuple[int, int]] = None) -> LocalizationResult:
    """The DSAC half of ``Localizer.localize``: a pose from predicted scene coordinates.

    coords_world (N, 3), pixels_xy (N, 2) in the image's pixels, coords_cam (N, 3) camera-frame
    points for RGB-D hypotheses (NaN rows: no depth); all on one device. For callers that already
    hold coordinates, as mapping validation does with its buffered features: the same estimate,
    status, reasons and covariance check as a full ``localize``. timings_ms: "ransac", "total".
    """
    start = time.perf_counter()
    with torch_threads(options.threads if coords_world.device.type == "cpu" else 0):
        estimate, info = estimate_pose(pixels_xy, coords_world, intrinsics, options, coords_cam=coords_cam,
                                       grid_hw=grid_hw)
    ransac_ms = (time.perf_counter() - start) * 1e3
    timings = {"network": 0.0, "ransac": ransac_ms, "total": ransac_ms}
    correspondences = int(pixels_xy.shape[0])
    common = dict(inlier_count=int(estimate.inlier_count), hypotheses_valid=int(info.hypotheses_valid),
                  correspondences=correspondences, score=_finite(estimate.score),
                  ransac_timings_ms={k: float(v) for k, v in info.timings_ms.items()},
                  inlier_ratio=estimate.inlier_count / correspondences if correspondences else 0.0,
                  timings_ms=timings, device=str(coords_world.device))
    if not estimate.success:
        return LocalizationResult(False, Status.LOST, estimate.reason or "no pose found", **common)
    covariance = estimate.covariance_6x6
    if covariance is not None and not np.all(np.isfinite(covariance)):
        covariance = None
    return LocalizationResult(True, Status.OK, "", world_T_cam=np.asarray(estimate.world_T_cam, dtype=np.float64),
                              covariance_6x6=covariance, **common)


def _finite(value: float) -> float:
    value = float(value)
    return value if np.isfinite(value) else 0.0
