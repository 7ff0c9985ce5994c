"""The one acceptance gate (dsac_ros.gate), offline evaluation through it, and what the report
counts: published frames, false positives and what the gate stopped."""

import numpy as np
import pytest

from dsac_ros.data.scenes import get_scene
from dsac_ros.evaluation import FrameRecord, compute_metrics, evaluate_frames
from dsac_ros.gate import GateSettings, gate
from dsac_ros.localizer import LocalizationResult, Localizer
from dsac_ros.ros.params import SPECS
from dsac_ros.status import Status
from fixtures_maps import FIT_STRIDE, tiny_map_path  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _result(**changes):
    values = dict(success=True, status=Status.OK, world_T_cam=np.eye(4), covariance_6x6=np.eye(6) * 1e-4,
                  inlier_count=200, inlier_ratio=0.5)
    values.update(changes)
    return LocalizationResult(**values)


@pytest.mark.parametrize("changes, status, reason", [
    ({}, Status.OK, ""),
    ({"inlier_count": 49}, Status.LOST, "49 inliers < min_inliers 50"),
    ({"inlier_ratio": 0.02}, Status.LOST, "inlier ratio 0.020 < min_inlier_ratio 0.1"),
    ({"world_T_cam": np.full((4, 4), np.nan)}, Status.LOST, "not a finite rigid transform"),
    ({"covariance_6x6": np.full((6, 6), np.inf)}, Status.LOST, "covariance is not finite"),
    ({"success": False, "status": Status.LOST, "reason": "no hypothesis"}, Status.LOST, "no hypothesis"),
    ({"success": False, "status": Status.BAD_INPUT, "reason": "bad encoding"}, Status.BAD_INPUT, "bad encoding"),
])
def test_the_gate_passes_or_names_why_not(changes, status, reason):
    got_status, got_reason = gate(_result(**changes), GateSettings())
    assert got_status == status and reason in got_reason and (reason or got_reason == "")


def test_the_node_parameters_default_to_the_gate_settings():
    assert (SPECS["min_inliers"].default, SPECS["min_inlier_ratio"].default) == (GateSettings().min_inliers,
                                                                       GateSettings().min_inlier_ratio)


def test_metrics_count_false_positives_and_what_the_gate_stopped():
    def record(offset_m, gated=False):
        estimate = np.eye(4)
        estimate[0, 3] = offset_m
        r = FrameRecord(0, estimate, np.eye(4))
        if gated:
            r.apply_gate(_result(world_T_cam=estimate, inlier_count=10), GateSettings())
        return r

    records = [record(0.01), record(0.03), record(0.10), record(0.50), record(2.0, gated=True), record(0.02, gated=True)]
    metrics = compute_metrics(records)
    assert metrics["published_pct"] == pytest.approx(100 * 4 / 6)
    assert metrics["false_positives_25cm_10deg"] == 1 and metrics["false_positives_5cm_5deg"] == 2
    assert metrics["recall_5cm_5deg"] == pytest.approx(100 * 2 / 6)
    assert metrics["precision_5cm_5deg"] == pytest.approx(50.0)
    assert metrics["gated"] == 2 and metrics["gated_wrong_25cm_10deg"] == 1
    assert records[-1].status == Status.LOST and "min_inliers" in records[-1].reason


def test_frames_of_another_scene_are_stopped_by_the_gate(tiny_map_path):
    """The tiny map (small_room) asked about large_room: whatever DSAC returns, nothing is published."""
    localizer = Localizer(tiny_map_path, device="cpu")
    frames = list(get_scene("large_room").render_frames("test", 160, 120, stride=50))
    gated = evaluate_frames(localizer, frames, progress=False, gate_settings=GateSettings())
    assert all(r.status == Status.LOST for r in gated)
    metrics = compute_metrics(gated)
    assert metrics["published_pct"] == 0.0 and metrics["false_positives_25cm_10deg"] == 0
    # Without the gate, DSAC's own answers: here every frame an OK pose (28-43 inliers, ratio about
    # 0.1, measured) and every one metres off. The gate stopped exactly those.
    raw = compute_metrics(evaluate_frames(localizer, frames, progress=False))
    assert raw["false_positives_25cm_10deg"] >= 1
    assert metrics["gated"] == metrics["gated_wrong_25cm_10deg"] == raw["false_positives_25cm_10deg"]


def test_the_gate_keeps_the_frames_the_map_knows(tiny_map_path):
    localizer = Localizer(tiny_map_path, device="cpu")
    frames = list(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE))[:4]
    records = evaluate_frames(localizer, frames, progress=False, seed_from_stamp=True, gate_settings=GateSettings())
    metrics = compute_metrics(records)
    assert metrics["published_pct"] >= 75.0 and metrics["false_positives_25cm_10deg"] == 0


def test_covariance_consistency_of_errors_drawn_from_the_covariance():
    """Errors drawn from the stated covariance give NEES mean 6 and 95 % inside the 95 % ellipsoid;
    the same errors under a covariance 10 times too small do not."""
    from scipy.spatial.transform import Rotation

    from dsac_ros.evaluation import covariance_consistency

    rng = np.random.default_rng(0)
    root = np.diag([0.02, 0.01, 0.03, 0.004, 0.002, 0.003]) + 0.001 * rng.standard_normal((6, 6))
    covariance = root @ root.T
    records, overconfident = [], []
    gt = np.eye(4)
    gt[:3, 3] = (1.0, 2.0, 1.5)
    for error in rng.multivariate_normal(np.zeros(6), covariance, size=2000):
        estimate = gt.copy()
        estimate[:3, 3] += error[:3]
        estimate[:3, :3] = Rotation.from_rotvec(error[3:]).as_matrix() @ gt[:3, :3]
        records.append(FrameRecord(0, estimate, gt, covariance_6x6=covariance))
        overconfident.append(FrameRecord(0, estimate, gt, covariance_6x6=covariance / 10))
    honest = covariance_consistency(records)
    # 2000 draws: the mean of chi-square(6) has a standard deviation of 0.08, the fraction 0.5 points.
    assert honest["covariance_frames"] == 2000 and abs(honest["nees_mean"] - 6.0) < 0.4
    assert abs(honest["pct_inside_95_ellipsoid"] - 95.0) < 2.0
    too_small = covariance_consistency(overconfident)
    assert too_small["nees_mean"] > 50 and too_small["pct_inside_95_ellipsoid"] < 50


def test_the_covariance_scale_makes_errors_consistent_and_never_narrows():
    from scipy.spatial.transform import Rotation

    from dsac_ros.evaluation import covariance_consistency, covariance_scale

    rng = np.random.default_rng(1)
    covariance = np.diag([4e-4, 1e-4, 9e-4, 1.6e-5, 4e-6, 9e-6])
    gt = np.eye(4)

    def records(error_scale, count=2000):
        out = []
        for error in rng.multivariate_normal(np.zeros(6), covariance * error_scale, size=count):
            estimate = gt.copy()
            estimate[:3, 3] = error[:3]
            estimate[:3, :3] = Rotation.from_rotvec(error[3:]).as_matrix()
            out.append(FrameRecord(0, estimate, gt, covariance_6x6=covariance))
        return out

    too_confident = records(30.0)
    scale = covariance_scale(too_confident)
    # The median of 2000 chi-square(6) draws is within about 3 % of its true value.
    assert scale == pytest.approx(30.0, rel=0.1)
    for r in too_confident:
        r.covariance_6x6 = r.covariance_6x6 * scale
    assert abs(covariance_consistency(too_confident)["pct_inside_95_ellipsoid"] - 95.0) < 3.0
    assert covariance_scale(records(0.25)) == 1.0  # a too wide covariance is left as it is
    assert covariance_scale(records(30.0, count=2)) is None  # too few frames to fit


def test_the_localizer_applies_the_maps_covariance_scale(tiny_map_path):
    from dsac_ros.covariance import NO_FLOOR
    from dsac_ros.mapfile import load_map

    frame = next(iter(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE)))
    raw_map, scaled_map = load_map(tiny_map_path), load_map(tiny_map_path)
    raw_map.training["validation"] = {}
    scaled_map.training["validation"] = {"covariance_scale": 4.0}
    # Without the covariance floor, which would lift part of the raw covariance (test_covariance.py).
    raw = Localizer(raw_map, device="cpu", covariance_floor=NO_FLOOR).localize(frame.image_rgb, frame.intrinsics,
                                                                             seed=3)
    scaled_localizer = Localizer(scaled_map, device="cpu", covariance_floor=NO_FLOOR)
    scaled = scaled_localizer.localize(frame.image_rgb, frame.intrinsics, seed=3)
    assert raw.success and scaled.success and scaled_localizer.covariance_scale == 4.0
    np.testing.assert_allclose(scaled.covariance_6x6, 4.0 * raw.covariance_6x6, rtol=1e-12)
    np.testing.assert_array_equal(scaled.world_T_cam, raw.world_T_cam)  # only the covariance changes
