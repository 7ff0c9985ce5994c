"""The localizer node's parameters: one table of names, defaults, descriptions and ranges.

`declare_parameters(node)` declares them all with a ParameterDescriptor (rclpy then rejects
out-of-range and read-only sets with a reason); `validate(parameters)` adds the checks a
descriptor cannot express (choices, device names, inlier threshold below the residual clamp),
without side effects, for `add_on_set_parameters_callback`. `NodeSettings.from_node(node)`
snapshots every value for one frame, so a change takes effect on the next frame.
config/localize.yaml carries the same names and defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from dsac_ros.covariance import CovarianceFloor
from dsac_ros.depth_alignment import DepthAlignmentOptions
from dsac_ros.dsac import RansacOptions
from dsac_ros.gate import GateSettings
from dsac_ros.inference import BACKENDS

TF_MODES = ("map_to_odom", "map_to_base", "map_to_camera")
POSE_TARGETS = ("camera", "base")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
FRAME_PATTERN = re.compile(r"^/?[A-Za-z0-9_][A-Za-z0-9_/.\-]*$")
# RansacOptions clamps residuals here; the inlier threshold must stay below it.
MAX_RESIDUAL_PX = RansacOptions().max_residual_px


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    range: Optional[tuple] = None  # (from, to) inclusive
    read_only: bool = False
    choices: Optional[tuple] = None
    # The RansacOptions field the parameter sets (``ransac.*`` parameters); 0 for inlier_beta = None.
    ransac_field: Optional[str] = None

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.range is not None:
            low, high = self.range
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high),
                                                                      step=0.0)]
        return descriptor


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("map_path", "", "map file (.pt) made by `dsac-ros map`; empty = no map (status NO_MODEL); "
                  "a change reloads the map"),
    ParameterSpec("device", "auto", "compute device: auto (CUDA when available), cpu, cuda or cuda:N; "
                  "a change reloads the map"),
    ParameterSpec("backend", "auto", "encoder inference runtime: auto (onnxruntime on the CPU, torch on CUDA; torch "
                  "if onnxruntime cannot run, said in the log and ~/status backend), torch or onnxruntime; a change "
                  "reloads the map", choices=BACKENDS),
    ParameterSpec("input_height_px", 0, "network input height in pixels (multiple of 8); 0 = the map's "
                  "training height", range=(0, 4096), read_only=True),
    ParameterSpec("retrieve_frames", 0, "memory maps: mapping frames searched per image; 0 = the map's own "
                  "(8), or 4 for depth frames with depth_alignment; fewer is faster and less accurate",
                  range=(0, 256)),
    ParameterSpec("ransac.hypotheses", 64, "pose hypotheses per frame (DSAC*/ACE 64, DSAC 256)", range=(1, 4096),
                  ransac_field="hypotheses"),
    ParameterSpec("ransac.inlier_threshold_px", 10.0, "reprojection error below which a correspondence is an "
                  f"inlier (tau), pixels; below the {MAX_RESIDUAL_PX:g} px residual clamp",
                  range=(0.1, MAX_RESIDUAL_PX - 1.0), ransac_field="inlier_threshold_px"),
    ParameterSpec("ransac.inlier_beta", 0.0, "softness of the soft inlier count, 1/px; 0 = 5 / inlier_threshold_px",
                  range=(0.0, 100.0), ransac_field="inlier_beta"),
    ParameterSpec("ransac.score_alpha", 100.0, "scale of the soft inlier score (DSAC* alpha)", range=(0.01, 10000.0),
                  ransac_field="score_alpha"),
    ParameterSpec("ransac.max_refinement_iterations", 100, "cap on re-fitting the selected hypothesis on its inliers",
                  range=(0, 1000), ransac_field="max_refinement_iterations"),
    ParameterSpec("ransac.time_budget_ms", 0.0, "cap on one frame's DSAC wall time, ms: a frame past it is LOST "
                  "(time_budget_exceeded) instead of blocking the next; 0 = no cap", range=(0.0, 60000.0),
                  ransac_field="time_budget_ms"),
    ParameterSpec("ransac.threads", 1, "CPU threads of DSAC's tensor work (0 = torch's own setting); its tensors are "
                  "too small to gain from more", range=(0, 256), ransac_field="threads"),
    ParameterSpec("subcell", True, "memory maps: each correspondence at the pixel where its matched key peaks within "
                  "the query's cell (sub-cell precision); false = at cell centres"),
    ParameterSpec("depth_alignment.enabled", DepthAlignmentOptions().enabled, "use_depth: refine DSAC's pose by "
                  "aligning the map's points to the depth image (point-to-plane); false = DSAC's pose"),
    ParameterSpec("depth_alignment.max_distance_m", DepthAlignmentOptions().max_distance_m, "use_depth: a map point "
                  "farther than this from the depth surface is left out of the alignment, metres", range=(0.001, 1.0)),
    ParameterSpec("depth_alignment.robust_scale_m", DepthAlignmentOptions().robust_scale_m, "use_depth: scale of the "
                  "robust (Cauchy) point-to-plane residual, about the depth noise, metres", range=(0.0001, 0.5)),
    ParameterSpec("min_inliers", GateSettings().min_inliers, "a pose is published only with at least this many inliers",
                  range=(4, 1000000)),
    ParameterSpec("min_inlier_ratio", GateSettings().min_inlier_ratio, "... and at least this fraction of correspondences being inliers",
                  range=(0.0, 1.0)),
    ParameterSpec("covariance_floor.position_m", CovarianceFloor().position_m, "smallest standard deviation of the "
                  "published covariance in any position direction, metres (0 = none)", range=(0.0, 10.0)),
    ParameterSpec("covariance_floor.rotation_deg", CovarianceFloor().rotation_deg, "smallest standard deviation of "
                  "the published covariance in any rotation direction, degrees (0 = none)", range=(0.0, 180.0)),
    ParameterSpec("map_frame", "map", "frame of published poses (REP-105)"),
    ParameterSpec("odom_frame", "odom", "odometry frame (tf_mode map_to_odom)"),
    ParameterSpec("base_frame", "base_link", "robot body frame"),
    ParameterSpec("camera_frame", "", "frame of the camera images; empty = the frame_id of each image"),
    ParameterSpec("tf_mode", "map_to_odom", "TF to broadcast: map_to_odom (through odom -> base on /tf), "
                  "map_to_base or map_to_camera", choices=TF_MODES),
    ParameterSpec("publish_tf", True, "broadcast TF at all"),
    ParameterSpec("transform_tolerance", 0.1, "TF is stamped this many seconds after the image stamp",
                  range=(0.0, 10.0)),
    ParameterSpec("tf_publish_rate_hz", 20.0, "rate at which the last TF is republished", range=(0.1, 1000.0),
                  read_only=True),
    ParameterSpec("pose_target", "camera", "which pose ~/pose carries: camera (optical frame) or base "
                  "(base_frame, through TF)", choices=POSE_TARGETS),
    ParameterSpec("use_compressed", False, "subscribe to CompressedImage on image/compressed instead of Image",
                  read_only=True),
    ParameterSpec("use_depth", False, "subscribe to a depth image (depth) for the RGB-D variant", read_only=True),
    ParameterSpec("image_timeout_s", 2.0, "status NO_IMAGE after this long without images, seconds",
                  range=(0.01, 3600.0)),
    ParameterSpec("seed_from_stamp", True, "seed RANSAC from the image stamp so replays are reproducible"),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


def declare_parameters(node) -> None:
    """Declare every parameter with its descriptor (raises on an out-of-range override)."""
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def validate(parameters: Iterable, current: Optional[dict] = None) -> SetParametersResult:
    """Checks beyond the descriptors, for parameters about to be set. No side effects.

    parameters: rclpy Parameters (name, value); current: {name: value} of the others, for
    checks that involve several parameters.
    """
    values = dict(current or {})
    values.update({parameter.name: parameter.value for parameter in parameters})
    names = {parameter.name for parameter in parameters}
    for name in names:
        spec = SPECS.get(name)
        value = values[name]
        if spec is None:
            continue
        if spec.choices and value not in spec.choices:
            return SetParametersResult(successful=False,
                                       reason=f"{name} must be one of {', '.join(spec.choices)}, got {value!r}")
        if name == "device" and not DEVICE_PATTERN.match(str(value)):
            return SetParametersResult(successful=False,
                                       reason=f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        if name in ("map_frame", "odom_frame", "base_frame") and not FRAME_PATTERN.match(str(value)):
            return SetParametersResult(successful=False, reason=f"{name} must be a frame name, got {value!r}")
        if name == "camera_frame" and value and not FRAME_PATTERN.match(str(value)):
            return SetParametersResult(successful=False, reason=f"camera_frame must be a frame name or empty, got {value!r}")
        if name == "input_height_px" and value % 8:
            return SetParametersResult(successful=False,
                                       reason=f"input_height_px must be 0 or a multiple of 8, got {value}")
    frames = [values.get(name) for name in ("map_frame", "odom_frame", "base_frame")]
    if names & {"map_frame", "odom_frame", "base_frame"} and None not in frames and len(set(frames)) < 3:
        return SetParametersResult(successful=False,
                                   reason=f"map_frame, odom_frame and base_frame must differ, got {frames}")
    return SetParametersResult(successful=True)


@dataclass(frozen=True)
class NodeSettings:
    """All parameter values at one instant (what a frame is processed with)."""

    map_path: str
    device: str
    backend: str
    input_height_px: int
    retrieve_frames: int
    ransac: RansacOptions  # from the ransac.* parameters (ParameterSpec.ransac_field)
    subcell: bool
    depth_alignment: DepthAlignmentOptions
    min_inliers: int
    min_inlier_ratio: float
    covariance_floor: CovarianceFloor
    map_frame: str
    odom_frame: str
    base_frame: str
    camera_frame: str
    tf_mode: str
    publish_tf: bool
    transform_tolerance_s: float
    tf_publish_rate_hz: float
    pose_target: str
    use_compressed: bool
    use_depth: bool
    image_timeout_s: float
    seed_from_stamp: bool

    @classmethod
    def from_node(cls, node) -> "NodeSettings":
        v = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
        return cls(
            map_path=v["map_path"], device=v["device"], backend=v["backend"], input_height_px=v["input_height_px"],
            retrieve_frames=v["retrieve_frames"], ransac=ransac_from_parameters(v), subcell=v["subcell"],
            depth_alignment=DepthAlignmentOptions(enabled=v["depth_alignment.enabled"],
                                                  max_distance_m=v["depth_alignment.max_distance_m"],
                                                  robust_scale_m=v["depth_alignment.robust_scale_m"]),
            min_inliers=v["min_inliers"], min_inlier_ratio=v["min_inlier_ratio"],
            covariance_floor=CovarianceFloor(v["covariance_floor.position_m"], v["covariance_floor.rotation_deg"]),
            map_frame=v["map_frame"].lstrip("/"), odom_frame=v["odom_frame"].lstrip("/"),
            base_frame=v["base_frame"].lstrip("/"), camera_frame=v["camera_frame"].lstrip("/"),
            tf_mode=v["tf_mode"], publish_tf=v["publish_tf"], transform_tolerance_s=v["transform_tolerance"],
            tf_publish_rate_hz=v["tf_publish_rate_hz"], pose_target=v["pose_target"],
            use_compressed=v["use_compressed"], use_depth=v["use_depth"], image_timeout_s=v["image_timeout_s"],
            seed_from_stamp=v["seed_from_stamp"])

    def ransac_options(self, seed: Optional[int] = None) -> RansacOptions:
        """RansacOptions for one frame; the node applies min_inliers itself, so the core's own
        floor stays at its default unless ours is lower."""
        return replace(self.ransac, min_inliers=min(RansacOptions().min_inliers, self.min_inliers), seed=seed)


def ransac_from_parameters(values: dict[str, Any]) -> RansacOptions:
    """RansacOptions from {parameter name: value}: each ``ransac.*`` spec names the field it sets."""
    changes = {}
    for spec in PARAMETERS:
        if spec.ransac_field is not None:
            value = values[spec.name]
            # 0 means "derive it" for inlier_beta (5 / inlier_threshold_px), which RansacOptions spells None.
            changes[spec.ransac_field] = None if spec.ransac_field == "inlier_beta" and not value > 0 else value
    return RansacOptions(**changes)
