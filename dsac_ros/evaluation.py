"""Relocalisation metrics and reports, from any sequence of per-frame estimates.

The input is a list of ``FrameRecord`` (stamp, estimated pose or None, ground-truth pose,
timings per stage), so offline evaluation (``dsac-ros evaluate``) and live evaluation of the
ROS node share this code. A frame without an estimate is a failure: its error is infinite, it
counts against every "percent within" metric, and a median that lands on failures is reported
as None (null in JSON) rather than inf.

Report files (``write_report``):
    metrics.json      the numbers of ``compute_metrics``
    per_frame.csv     one row per frame: errors, status, inliers, timings, both poses
    est.txt, gt.txt   TUM trajectories ``stamp tx ty tz qx qy qz qw`` (stamp in seconds):
                      ``evo_ape tum gt.txt est.txt`` works; failed frames are absent from est.txt
    error_cdf.png     cumulative distribution of translation and rotation errors
    trajectory.png    top-down view, ground truth vs estimates coloured by error
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from dsac_ros.frame import stamp_seed
from dsac_ros.gate import gate
from dsac_ros.geometry import is_valid_pose, pose_error_vector, pose_errors, quaternion_xyzw_from_rotation
from dsac_ros.status import Status

# (translation m, rotation deg, metrics key): the standard relocalisation thresholds.
THRESHOLDS = ((0.05, 5.0, "pct_5cm_5deg"), (0.02, 2.0, "pct_2cm_2deg"), (0.01, 1.0, "pct_1cm_1deg"))
TIMING_STAGES = ("network", "ransac", "total")


@dataclass
class FrameRecord:
    """One evaluated frame.

    world_T_cam_est: (4, 4) camera-to-world estimate, None when localisation failed.
    world_T_cam_gt: (4, 4) ground truth, None when unknown (then the frame is not scored).
    timings_ms: per stage, e.g. {"network": 9.1, "ransac": 14.0, "total": 24.3}.
    """

    stamp_ns: int
    world_T_cam_est: Optional[np.ndarray]
    world_T_cam_gt: Optional[np.ndarray]
    timings_ms: dict[str, float] = field(default_factory=dict)
    name: str = ""
    status: str = ""  # a dsac_ros.status.Status name; empty: OK with an estimate, else LOST
    reason: str = ""
    inlier_count: int = 0
    inlier_ratio: float = 0.0
    score: float = 0.0
    # Set when the acceptance gate (dsac_ros.gate) turned an estimate into LOST: its (translation m,
    # rotation deg) error, so a report can say what the gate stopped (inf without ground truth).
    gated_errors: Optional[tuple[float, float]] = None
    covariance_6x6: Optional[np.ndarray] = None  # of the published estimate (x y z, rot X Y Z; world)

    def __post_init__(self) -> None:
        if self.world_T_cam_est is not None:
            self.world_T_cam_est = np.asarray(self.world_T_cam_est, dtype=np.float64)
            if not is_valid_pose(self.world_T_cam_est):
                # An invalid estimate is a failed frame, never a NaN in the metrics.
                self.world_T_cam_est = None
                self.reason = self.reason or "estimate is not a valid rigid transform"
        if self.world_T_cam_gt is not None:
            self.world_T_cam_gt = np.asarray(self.world_T_cam_gt, dtype=np.float64)
        if not self.status:
            self.status = Status.OK if self.world_T_cam_est is not None else Status.LOST

    @classmethod
    def from_result(cls, result: Any, world_T_cam_gt: Optional[np.ndarray], stamp_ns: int,
                    name: str = "") -> "FrameRecord":
        """From any object with the fields of ``dsac_ros.localizer.LocalizationResult``."""
        return cls(
            stamp_ns=int(stamp_ns),
            world_T_cam_est=result.world_T_cam if getattr(result, "success", False) else None,
            world_T_cam_gt=world_T_cam_gt,
            timings_ms=dict(getattr(result, "timings_ms", {}) or {}),
            name=name,
            status=str(getattr(result, "status", "")),
            reason=str(getattr(result, "reason", "")),
            inlier_count=int(getattr(result, "inlier_count", 0) or 0),
            inlier_ratio=float(getattr(result, "inlier_ratio", 0.0) or 0.0),
            score=float(getattr(result, "score", 0.0) or 0.0),
            covariance_6x6=getattr(result, "covariance_6x6", None) if getattr(result, "success", False) else None,
        )

    def apply_gate(self, result: Any, settings: Any) -> "FrameRecord":
        """Apply ``dsac_ros.gate.gate``: a rejected estimate becomes LOST with the gate's reason,
        as the node would publish nothing for it; its error is kept in ``gated_errors``."""
        status, reason = gate(result, settings)
        if status != Status.OK and self.world_T_cam_est is not None:
            self.gated_errors = self.errors()
            self.world_T_cam_est, self.covariance_6x6 = None, None
        if status != Status.OK:
            self.status, self.reason = status, reason
        return self

    @property
    def has_gt(self) -> bool:
        return self.world_T_cam_gt is not None and is_valid_pose(self.world_T_cam_gt)

    @property
    def localized(self) -> bool:
        return self.world_T_cam_est is not None

    def errors(self) -> tuple[float, float]:
        """(translation m, rotation deg); (inf, inf) for a failed or unscored frame."""
        if not (self.localized and self.has_gt):
            return math.inf, math.inf
        translation_m, rotation_deg = pose_errors(self.world_T_cam_est, self.world_T_cam_gt)
        return float(translation_m), float(rotation_deg)


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if np.isfinite(value) else None


def _percentile(values: np.ndarray, q: float) -> Optional[float]:
    if len(values) == 0:
        return None
    # "lower" keeps medians over an even count of infinite and finite errors defined.
    return _finite_or_none(np.percentile(values, q, method="lower" if np.isinf(values).any() else "linear"))


def compute_metrics(records: Sequence[FrameRecord]) -> dict[str, Any]:
    """Metrics over frames with ground truth; failures count as infinite error.

    Keys: frames (scored), frames_without_gt, localized, failed, pct_5cm_5deg, pct_2cm_2deg,
    pct_1cm_1deg (percent of scored frames, errors strictly below both thresholds, as DSAC*),
    median_translation_cm, median_rotation_deg (over all scored frames, None if the median is a
    failure), median_translation_cm_localized, median_rotation_deg_localized, mean_* over
    localized frames, and for each stage in TIMING_STAGES median_ms_*, p95_ms_*, mean_ms_*
    (over every frame, failures included: they cost time too).
    """
    scored = [r for r in records if r.has_gt]
    errors = np.array([r.errors() for r in scored], dtype=np.float64).reshape(-1, 2)
    translation_m, rotation_deg = errors[:, 0], errors[:, 1]
    localized = np.isfinite(translation_m)
    metrics: dict[str, Any] = {
        "frames": len(scored),
        "frames_without_gt": len(records) - len(scored),
        "localized": int(localized.sum()),
        "failed": int((~localized).sum()),
    }
    for threshold_m, threshold_deg, key in THRESHOLDS:
        within = (translation_m < threshold_m) & (rotation_deg < threshold_deg)
        metrics[key] = 100.0 * float(within.mean()) if len(scored) else 0.0
    median_t = _percentile(translation_m, 50)
    median_r = _percentile(rotation_deg, 50)
    metrics["median_translation_cm"] = None if median_t is None else 100.0 * median_t
    metrics["median_rotation_deg"] = median_r
    ok_t, ok_r = translation_m[localized], rotation_deg[localized]
    metrics["median_translation_cm_localized"] = None if not len(ok_t) else 100.0 * float(np.median(ok_t))
    metrics["median_rotation_deg_localized"] = None if not len(ok_r) else float(np.median(ok_r))
    metrics["mean_translation_cm_localized"] = None if not len(ok_t) else 100.0 * float(np.mean(ok_t))
    metrics["mean_rotation_deg_localized"] = None if not len(ok_r) else float(np.mean(ok_r))
    metrics.update(_published_metrics(scored, translation_m, rotation_deg, localized))
    metrics.update(covariance_consistency(scored))
    for stage in TIMING_STAGES:
        times = np.array([r.timings_ms[stage] for r in records if stage in r.timings_ms], dtype=np.float64)
        times = times[np.isfinite(times)]
        metrics[f"median_ms_{stage}"] = _percentile(times, 50)
        metrics[f"p95_ms_{stage}"] = _percentile(times, 95)
        metrics[f"mean_ms_{stage}"] = float(times.mean()) if len(times) else None
    return metrics


# A published pose this far off teleports a robot: the navigation stack's false positive.
FALSE_POSITIVE_M, FALSE_POSITIVE_DEG = 0.25, 10.0


def _published_metrics(scored: Sequence[FrameRecord], translation_m: np.ndarray, rotation_deg: np.ndarray,
                       localized: np.ndarray) -> dict[str, Any]:
    """What a navigation stack would receive: published % (localized = published), false positives
    (published with an error above 25 cm or 10 deg, and above 5 cm / 5 deg), recall and precision at
    5 cm / 5 deg, and what the gate stopped (frames it turned LOST, and how many of those were wrong)."""
    count = len(scored)
    threshold_m, threshold_deg, _ = THRESHOLDS[0]  # 5 cm / 5 deg
    within = (translation_m < threshold_m) & (rotation_deg < threshold_deg)
    far = localized & ((translation_m > FALSE_POSITIVE_M) | (rotation_deg > FALSE_POSITIVE_DEG))
    gated = [r.gated_errors for r in scored if r.gated_errors is not None]
    gated_wrong = sum(1 for t, r in gated if t > FALSE_POSITIVE_M or r > FALSE_POSITIVE_DEG)
    return {
        "published_pct": 100.0 * float(localized.mean()) if count else 0.0,
        "false_positives_25cm_10deg": int(far.sum()),
        "false_positives_5cm_5deg": int((localized & ~within).sum()),
        "recall_5cm_5deg": 100.0 * float(within.mean()) if count else 0.0,
        "precision_5cm_5deg": 100.0 * float(within.sum() / localized.sum()) if localized.any() else None,
        "gated": len(gated),
        "gated_wrong_25cm_10deg": gated_wrong,
    }


# chi-square 95 % quantile with 6 degrees of freedom: a consistent 6-DoF covariance has 95 % of
# its errors inside this Mahalanobis radius (squared), and a mean NEES of 6.
CHI2_6DOF_95 = 12.5916


CHI2_6DOF_MEDIAN = 5.3481
CHI2_6DOF_QUANTILES = {0.5: CHI2_6DOF_MEDIAN, 0.75: 7.840804, 0.9: 10.644641, 0.95: 12.591587}
# A covariance scale is fitted only from this many frames with ground truth and a pose.
MIN_CALIBRATION_FRAMES = 3


def nees_values(records: Sequence[FrameRecord]) -> np.ndarray:
    """(n,) normalised estimation errors squared, e^T C^-1 e with e = ``geometry.pose_error_vector``,
    of the localized frames with ground truth and a finite covariance."""
    nees = []
    for r in records:
        if r.localized and r.has_gt and r.covariance_6x6 is not None and np.all(np.isfinite(r.covariance_6x6)):
            error = pose_error_vector(r.world_T_cam_est, r.world_T_cam_gt)
            try:
                nees.append(float(error @ np.linalg.solve(np.asarray(r.covariance_6x6, dtype=np.float64), error)))
            except np.linalg.LinAlgError:
                continue
    return np.array(nees, dtype=np.float64)


def covariance_scale(records: Sequence[FrameRecord], quantile: float = 0.5) -> Optional[float]:
    """The factor that makes these frames' covariances consistent: the ``quantile`` of their NEES over
    the chi-square(6) quantile (0.5: medians; 0.9: the tail that decides what a 95 % ellipsoid
    holds), never below 1 (calibration only ever widens the residual-based covariance); None with
    fewer than ``MIN_CALIBRATION_FRAMES`` usable frames. A quantile, not the mean: one gross error
    would otherwise set the scale for every frame."""
    values = nees_values(records)
    if len(values) < MIN_CALIBRATION_FRAMES:
        return None
    return max(1.0, float(np.quantile(values, quantile)) / CHI2_6DOF_QUANTILES[quantile])


def covariance_consistency(records: Sequence[FrameRecord]) -> dict[str, Any]:
    """How honest the published covariances are: normalised estimation error squared (NEES) over
    published frames with ground truth and a covariance. Consistent: mean about 6, about 95 %
    inside the 95 % ellipsoid."""
    values = nees_values(records)
    return {"covariance_frames": len(values),
            "nees_mean": float(values.mean()) if len(values) else None,
            "nees_median": float(np.median(values)) if len(values) else None,
            "pct_inside_95_ellipsoid": 100.0 * float((values < CHI2_6DOF_95).mean()) if len(values) else None}


def _fmt(value: Optional[float], digits: int = 1, failed_text: str = "fail") -> str:
    return failed_text if value is None else f"{value:.{digits}f}"


def format_metrics_table(metrics: dict[str, Any], title: str = "") -> str:
    """A fixed-width text table of the headline numbers."""
    rows = [
        ("frames (scored / localized)", f"{metrics['frames']} / {metrics['localized']}"),
        ("published (gate passed)", f"{metrics.get('published_pct', 0.0):.1f} %"
                                    + (f", gate stopped {metrics['gated']} ({metrics['gated_wrong_25cm_10deg']} "
                                       f"of them > 25 cm / 10 deg)" if metrics.get("gated") else "")),
        ("false positives", f"{metrics.get('false_positives_25cm_10deg', 0)} > 25 cm / 10 deg, "
                            f"{metrics.get('false_positives_5cm_5deg', 0)} > 5 cm / 5 deg"),
        ("covariance: NEES mean / inside 95 %", f"{_fmt(metrics.get('nees_mean'), 1, '-')} (6 if honest) / "
                                               f"{_fmt(metrics.get('pct_inside_95_ellipsoid'), 1, '-')} %"),
        ("within 5 cm, 5 deg", f"{metrics['pct_5cm_5deg']:.1f} %"),
        ("within 2 cm, 2 deg", f"{metrics['pct_2cm_2deg']:.1f} %"),
        ("within 1 cm, 1 deg", f"{metrics['pct_1cm_1deg']:.1f} %"),
        ("median translation error", f"{_fmt(metrics['median_translation_cm'])} cm"),
        ("median rotation error", f"{_fmt(metrics['median_rotation_deg'], 2)} deg"),
        ("  (localized frames only)", f"{_fmt(metrics['median_translation_cm_localized'], 1, '-')} cm, "
                                      f"{_fmt(metrics['median_rotation_deg_localized'], 2, '-')} deg"),
    ]
    for stage in TIMING_STAGES:
        median = _fmt(metrics.get(f"median_ms_{stage}"), 1, "-")
        p95 = _fmt(metrics.get(f"p95_ms_{stage}"), 1, "-")
        rows.append((f"time {stage} median / p95", f"{median} / {p95} ms"))
    if metrics.get("frames_without_gt"):
        rows.append(("frames without ground truth (ignored)", str(metrics["frames_without_gt"])))
    width = max(len(name) for name, _ in rows)
    lines = [title] if title else []
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


# --- files -------------------------------------------------------------------------------------

def pose_to_tum_fields(world_T_cam: np.ndarray) -> list[float]:
    """(4, 4) pose -> [tx, ty, tz, qx, qy, qz, qw]."""
    pose = np.asarray(world_T_cam, dtype=np.float64)
    return [*pose[:3, 3].tolist(), *quaternion_xyzw_from_rotation(pose[:3, :3]).tolist()]


def format_stamp_s(stamp_ns: int) -> str:
    """Nanoseconds -> exact decimal seconds ("1700000000.200000000"); float division would round."""
    stamp_ns = int(stamp_ns)
    sign = "-" if stamp_ns < 0 else ""
    return f"{sign}{abs(stamp_ns) // 10**9}.{abs(stamp_ns) % 10**9:09d}"


def write_tum(path: str | Path, stamps_ns: Iterable[int], poses: Iterable[Optional[np.ndarray]]) -> int:
    """Write a TUM trajectory (``stamp tx ty tz qx qy qz qw``, stamp in seconds); None poses are
    skipped. Returns the number of poses written."""
    lines = []
    for stamp_ns, pose in zip(stamps_ns, poses):
        if pose is None:
            continue
        fields = pose_to_tum_fields(pose)
        lines.append(f"{format_stamp_s(stamp_ns)} " + " ".join(f"{v:.9f}" for v in fields))
    Path(path).write_text("".join(line + "\n" for line in lines))
    return len(lines)


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """TUM file -> ((N,) stamps in seconds, (N, 4, 4) poses)."""
    from dsac_ros.geometry import make_pose, rotation_from_quaternion_xyzw
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
    stamps = np.array([float(row[0]) for row in rows])
    poses = np.array([make_pose(rotation_from_quaternion_xyzw([float(v) for v in row[4:8]]),
                                [float(v) for v in row[1:4]]) for row in rows]).reshape(-1, 4, 4)
    return stamps, poses


PER_FRAME_COLUMNS = (
    ["index", "name", "stamp_s", "status", "reason", "translation_error_cm", "rotation_error_deg",
     "inlier_count", "inlier_ratio", "score"]
    + [f"ms_{stage}" for stage in TIMING_STAGES]
    + [f"est_{k}" for k in ("tx", "ty", "tz", "qx", "qy", "qz", "qw")]
    + [f"gt_{k}" for k in ("tx", "ty", "tz", "qx", "qy", "qz", "qw")]
)


def write_per_frame_csv(path: str | Path, records: Sequence[FrameRecord]) -> None:
    """One row per frame; error and pose cells are empty when there is no estimate or ground truth."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PER_FRAME_COLUMNS)
        for index, record in enumerate(records):
            translation_m, rotation_deg = record.errors()
            scored = np.isfinite(translation_m)
            row = [index, record.name, format_stamp_s(record.stamp_ns), record.status, record.reason,
                   f"{100 * translation_m:.4f}" if scored else "", f"{rotation_deg:.4f}" if scored else "",
                   record.inlier_count, f"{record.inlier_ratio:.4f}", f"{record.score:.4f}"]
            row += [f"{record.timings_ms[s]:.3f}" if s in record.timings_ms else "" for s in TIMING_STAGES]
            for pose in (record.world_T_cam_est, record.world_T_cam_gt):
                row += [f"{v:.9f}" for v in pose_to_tum_fields(pose)] if pose is not None else [""] * 7
            writer.writerow(row)


def _errors_for_plots(records: Sequence[FrameRecord]) -> tuple[np.ndarray, np.ndarray]:
    errors = np.array([r.errors() for r in records if r.has_gt], dtype=np.float64).reshape(-1, 2)
    return 100.0 * errors[:, 0], errors[:, 1]


def plot_error_cdf(path: str | Path, records: Sequence[FrameRecord], title: str = "") -> None:
    """Cumulative percent of frames below each error; failed frames never reach the curve's top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    translation_cm, rotation_deg = _errors_for_plots(records)
    count = max(len(translation_cm), 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, values, unit in ((axes[0], translation_cm, "cm"), (axes[1], rotation_deg, "deg")):
        marks = (1.0, 2.0, 5.0)  # the standard thresholds
        finite = np.sort(values[np.isfinite(values)])
        # Log x axis: the 1-5 cm/deg range that matters and gross failures both stay readable.
        low = min(0.1, float(finite[0]) if len(finite) and finite[0] > 0 else 0.1)
        high = max(marks[-1] * 2.0, float(finite[-1]) * 1.5 if len(finite) else 0.0)
        if len(finite):
            xs = np.concatenate([[low], np.maximum(finite, low), [high]])
            ys = np.concatenate([[0.0], np.arange(1, len(finite) + 1) * 100.0 / count, [len(finite) * 100.0 / count]])
            axis.step(xs, ys, where="post", color="tab:blue")
        axis.set_xscale("log")
        axis.set_xlim(low, high)
        for mark in marks:
            axis.axvline(mark, color="tab:red", linestyle="--", linewidth=0.8, alpha=0.6)
        failed = int(np.sum(~np.isfinite(values)))
        axis.set_ylim(0, 100)
        axis.set_xlabel(f"{'translation' if unit == 'cm' else 'rotation'} error ({unit})")
        axis.set_ylabel("frames below error (%)")
        axis.set_title(f"{len(values)} frames, {failed} failed")
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_trajectory(path: str | Path, records: Sequence[FrameRecord], title: str = "",
                    max_error_cm: float = 20.0) -> None:
    """Top-down view: ground truth as a line, estimates as dots coloured by translation error
    (clipped at max_error_cm), failed frames as red crosses on the ground truth. The view drops
    the world axis along which the ground truth moves least (the vertical, for a walking camera)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in records if r.has_gt]
    figure, axis = plt.subplots(figsize=(7, 6))
    if scored:
        gt = np.array([r.world_T_cam_gt[:3, 3] for r in scored])
        extent = gt.max(axis=0) - gt.min(axis=0)
        a, b = sorted(np.argsort(extent)[1:])
        axis.plot(gt[:, a], gt[:, b], color="black", linewidth=1.0, label="ground truth")
        est = [(r.world_T_cam_est[:3, 3], r.world_T_cam_gt[:3, 3], 100.0 * r.errors()[0])
               for r in scored if r.localized]
        if est:
            points = np.array([p for p, _, _ in est])
            truths = np.array([g for _, g, _ in est])
            errors = np.array([e for _, _, e in est])
            # Thin links from each estimate to its ground truth show which frame went where.
            for point, truth in zip(points, truths):
                axis.plot([point[a], truth[a]], [point[b], truth[b]], color="grey", linewidth=0.4, zorder=1)
            dots = axis.scatter(points[:, a], points[:, b], c=np.minimum(errors, max_error_cm), cmap="viridis",
                                vmin=0, vmax=max_error_cm, s=14, label="estimate", zorder=3)
            figure.colorbar(dots, ax=axis, label=f"translation error (cm, clipped at {max_error_cm:g})")
        failed = np.array([r.world_T_cam_gt[:3, 3] for r in scored if not r.localized]).reshape(-1, 3)
        if len(failed):
            axis.scatter(failed[:, a], failed[:, b], marker="x", color="red", s=30, label="failed", zorder=4)
        names = "xyz"
        axis.set_xlabel(f"world {names[a]} (m)")
        axis.set_ylabel(f"world {names[b]} (m)")
        axis.set_aspect("equal", adjustable="datalim")
        axis.legend(loc="best", fontsize=8)
    axis.set_title(title or "trajectory (top-down)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(out_dir: str | Path, records: Sequence[FrameRecord], metrics: Optional[dict[str, Any]] = None,
                 title: str = "", extra: Optional[dict[str, Any]] = None, plots: bool = True) -> dict[str, Path]:
    """Write every report file into out_dir; returns {kind: path}. ``extra`` (map path, device,
    RANSAC settings, ...) is stored under "run" in metrics.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(records) if metrics is None else metrics
    paths = {"metrics": out_dir / "metrics.json", "per_frame": out_dir / "per_frame.csv",
             "est": out_dir / "est.txt", "gt": out_dir / "gt.txt"}
    document = dict(metrics)
    if extra:
        document["run"] = extra
    paths["metrics"].write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    write_per_frame_csv(paths["per_frame"], records)
    write_tum(paths["est"], [r.stamp_ns for r in records], [r.world_T_cam_est for r in records])
    write_tum(paths["gt"], [r.stamp_ns for r in records], [r.world_T_cam_gt if r.has_gt else None for r in records])
    if plots:
        paths["error_cdf"] = out_dir / "error_cdf.png"
        paths["trajectory"] = out_dir / "trajectory.png"
        plot_error_cdf(paths["error_cdf"], records, title)
        plot_trajectory(paths["trajectory"], records, title)
    return paths


# Frame i of an offline evaluation is seeded with DEFAULT_SEED + i unless seeded from its stamp.
DEFAULT_SEED = 0


def evaluate_frames(localizer, frames, use_depth: bool = False, seed: int | None = DEFAULT_SEED,
                    every: int = 1, max_frames: int | None = None, progress: bool = True, total: int | None = None,
                    seed_from_stamp: bool = False, gate_settings: Any = None):
    """Localise frames -> list of FrameRecord. ``frames`` is any iterable of dsac_ros.frame.Frame.

    Frame i is seeded with ``seed + i``, or with ``stamp_seed(frame.stamp_ns)`` when seed_from_stamp.
    gate_settings (``dsac_ros.gate.GateSettings``): count only what the node would publish; None
    scores every estimate DSAC returned."""
    from dsac_ros.progress import progress_bar

    records: list[FrameRecord] = []
    expected = None if total is None else (total + every - 1) // every
    if max_frames is not None:
        expected = max_frames if expected is None else min(expected, max_frames)
    bar = progress_bar(total=expected, unit="frame", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    within = 0
    threshold_m, threshold_deg, _ = THRESHOLDS[0]  # 5 cm / 5 deg, as compute_metrics counts it
    try:
        for index, frame in enumerate(frames):
            if index % every:
                continue
            if max_frames is not None and len(records) >= max_frames:
                break
            if seed_from_stamp:
                frame_seed = stamp_seed(frame.stamp_ns)
            else:
                frame_seed = None if seed is None else seed + index
            result = localizer.localize(frame.image_rgb, frame.intrinsics,
                                        depth_m=frame.depth_m if use_depth else None, seed=frame_seed)
            record = FrameRecord.from_result(result, frame.world_T_cam, frame.stamp_ns, frame.name or str(index))
            if gate_settings is not None:
                record.apply_gate(result, gate_settings)
            records.append(record)
            translation_m, rotation_deg = record.errors()
            within += translation_m < threshold_m and rotation_deg < threshold_deg
            bar.update(1)
            bar.set_postfix_str(f"5cm/5deg {100.0 * within / len(records):.0f}%  "
                                f"{result.timings_ms.get('total', 0.0):.0f} ms  {result.status}")
    finally:
        bar.close()
    return records
