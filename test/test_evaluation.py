"""Evaluation: hand-made estimates with known errors give known metrics and report files."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from dsac_ros.evaluation import (FrameRecord, compute_metrics, format_metrics_table, read_tum, write_report,
                                 write_tum)
from dsac_ros.geometry import make_pose, pose_errors, rotation_from_axis_angle

# (translation error cm, rotation error deg) per frame; None = failed; "no gt" = unscored.
CASES = [(0.0, 0.0), (1.5, 0.5), (3.0, 1.0), (0.5, 3.0), (10.0, 0.0), None, (0.2, 0.2), "no gt"]


def gt_pose(index):
    rotation = rotation_from_axis_angle([0.1 * index, 0.3, -0.2 + 0.05 * index])
    return make_pose(rotation, [0.3 * index, 1.0 + 0.1 * index, 0.2 * np.sin(index)])


def perturbed(world_T_cam_gt, translation_cm, rotation_deg, index):
    rng = np.random.default_rng(index)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    est = world_T_cam_gt.copy()
    est[:3, :3] = world_T_cam_gt[:3, :3] @ rotation_from_axis_angle(np.radians(rotation_deg) * axis)
    est[:3, 3] += direction * translation_cm / 100.0
    return est


@pytest.fixture
def records():
    out = []
    for index, case in enumerate(CASES):
        gt = gt_pose(index)
        timings = {"network": 5.0 + index, "ransac": 10.0 + index, "total": 15.0 + 2 * index}
        stamp_ns = 1_700_000_000_000_000_000 + index * 33_333_333
        if case is None:
            out.append(FrameRecord(stamp_ns, None, gt, timings, name=f"f{index}", status="LOST",
                                   reason="too few inliers"))
        elif case == "no gt":
            out.append(FrameRecord(stamp_ns, gt, None, timings, name=f"f{index}"))
        else:
            out.append(FrameRecord(stamp_ns, perturbed(gt, *case, index), gt, timings, name=f"f{index}",
                                   inlier_count=100 + index, inlier_ratio=0.5, score=42.0))
    return out


def test_hand_made_errors_are_what_the_records_report(records):
    for record, case in zip(records, CASES):
        if isinstance(case, tuple):
            translation_m, rotation_deg = record.errors()
            assert translation_m * 100 == pytest.approx(case[0], abs=1e-9)
            assert rotation_deg == pytest.approx(case[1], abs=1e-6)


def test_known_metrics(records):
    metrics = compute_metrics(records)
    assert metrics["frames"] == 7 and metrics["frames_without_gt"] == 1
    assert metrics["localized"] == 6 and metrics["failed"] == 1
    assert metrics["pct_5cm_5deg"] == pytest.approx(100 * 5 / 7)
    assert metrics["pct_2cm_2deg"] == pytest.approx(100 * 3 / 7)
    assert metrics["pct_1cm_1deg"] == pytest.approx(100 * 2 / 7)
    # Failures are infinite: sorted translation [0, 0.2, 0.5, 1.5, 3, 10, inf] -> 1.5 cm.
    assert metrics["median_translation_cm"] == pytest.approx(1.5)
    assert metrics["median_rotation_deg"] == pytest.approx(0.5)
    assert metrics["median_translation_cm_localized"] == pytest.approx(np.median([0, 1.5, 3, 0.5, 10, 0.2]))
    totals = [15.0 + 2 * i for i in range(len(CASES))]  # timings of every frame, failures included
    assert metrics["median_ms_total"] == pytest.approx(np.median(totals))
    assert metrics["p95_ms_total"] == pytest.approx(np.percentile(totals, 95))
    assert metrics["median_ms_network"] == pytest.approx(np.median([5.0 + i for i in range(len(CASES))]))
    table = format_metrics_table(metrics, "hand-made")
    assert "71.4 %" in table and "1.5 cm" in table


def test_mostly_failed_run_has_no_infinite_numbers(tmp_path):
    gt = gt_pose(1)
    records = [FrameRecord(i, None, gt) for i in range(3)] + [FrameRecord(9, gt, gt)]
    nan_pose = np.full((4, 4), np.nan)
    records.append(FrameRecord(10, nan_pose, gt))  # an invalid estimate is a failure, not a NaN
    metrics = compute_metrics(records)
    assert metrics["failed"] == 4 and metrics["pct_5cm_5deg"] == pytest.approx(20.0)
    assert metrics["median_translation_cm"] is None and metrics["median_translation_cm_localized"] == 0.0
    paths = write_report(tmp_path, records, plots=False)
    assert json.loads(paths["metrics"].read_text())["median_rotation_deg"] is None


def test_report_files(records, tmp_path):
    paths = write_report(tmp_path / "report", records, title="hand-made", extra={"map": "x.pt"})
    metrics = json.loads(paths["metrics"].read_text())
    for key in ("frames", "pct_5cm_5deg", "pct_2cm_2deg", "pct_1cm_1deg", "median_translation_cm",
                "median_rotation_deg", "median_ms_total", "p95_ms_total"):
        assert key in metrics
    assert metrics["frames"] == 7 and metrics["run"] == {"map": "x.pt"}

    with open(paths["per_frame"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(CASES)
    assert float(rows[2]["translation_error_cm"]) == pytest.approx(3.0, abs=1e-3)
    assert rows[5]["status"] == "LOST" and rows[5]["translation_error_cm"] == "" and rows[5]["reason"]
    assert rows[7]["translation_error_cm"] == "" and rows[7]["gt_tx"] == ""
    assert float(rows[3]["ms_total"]) == 21.0
    assert rows[1]["stamp_s"] == "1700000000.033333333"  # exact, not float-rounded

    # TUM: failed frames absent from est, unscored frame absent from gt; poses round-trip.
    est_stamps, est_poses = read_tum(paths["est"])
    gt_stamps, gt_poses = read_tum(paths["gt"])
    assert len(est_stamps) == 7 and len(gt_stamps) == 7
    assert paths["est"].read_text().splitlines()[0].split()[0] == "1700000000.000000000"
    assert gt_stamps[1] == pytest.approx(1_700_000_000.033333333, abs=1e-6)
    translation_m, rotation_deg = pose_errors(est_poses[:5], gt_poses[:5])
    assert np.allclose(100 * translation_m, [c[0] for c in CASES[:5]], atol=1e-5)
    assert np.allclose(rotation_deg, [c[1] for c in CASES[:5]], atol=1e-4)

    for kind in ("error_cdf", "trajectory"):
        assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tum_stamps_keep_nanoseconds(tmp_path):
    pose = gt_pose(2)
    write_tum(tmp_path / "t.txt", [5, 1_234_567_890_123_456_789], [pose, pose])
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert lines[0].split()[0] == "0.000000005" and lines[1].split()[0] == "1234567890.123456789"
    assert len(lines[0].split()) == 8


def test_record_from_a_localizer_result():
    gt = gt_pose(0)
    ok = SimpleNamespace(success=True, world_T_cam=gt, status="OK", reason="", inlier_count=300, inlier_ratio=0.25,
                         score=30.0, timings_ms={"network": 1.0, "ransac": 2.0, "total": 3.5})
    lost = SimpleNamespace(success=False, world_T_cam=None, status="LOST", reason="too few inliers", inlier_count=3,
                           inlier_ratio=0.0, score=1.0, timings_ms={"total": 2.0})
    records = [FrameRecord.from_result(ok, gt, 0), FrameRecord.from_result(lost, gt, 1)]
    assert records[0].errors() == (0.0, 0.0) and records[0].inlier_count == 300
    assert records[1].status == "LOST" and records[1].errors()[0] == float("inf")


def test_the_camera_benchmarks_per_frame_pairs_match_offline_and_live_by_stamp():
    from dsac_ros.benchmarks.cameras import per_frame_pairs

    truth = np.eye(4)
    moved = np.eye(4)
    moved[0, 3] = 0.03
    offline = [FrameRecord(10, moved, truth, name="a", inlier_count=40), FrameRecord(20, None, truth, name="b")]
    live = [FrameRecord(20, truth, truth, name="b", inlier_count=55)]
    pairs = per_frame_pairs(offline, live)
    assert [p["stamp_ns"] for p in pairs] == [10, 20]
    assert pairs[0]["live"] is None and pairs[0]["offline"]["error_cm"] == pytest.approx(3.0)
    assert pairs[0]["offline"]["inliers"] == 40
    assert pairs[1]["offline"]["status"] == "LOST" and pairs[1]["offline"]["error_cm"] is None
    assert pairs[1]["live"]["status"] == "OK" and pairs[1]["live"]["error_cm"] == pytest.approx(0.0)
