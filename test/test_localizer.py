"""The localizer on a map fitted to the tiny scene: poses, statuses, settings, and agreement with
what evaluation (library and ``dsac-ros evaluate``) reports."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from dsac_ros.cli import main as cli_main
from dsac_ros.data import write_folder
from dsac_ros.data.scenes import get_scene
from dsac_ros.device import DeviceError
from dsac_ros.dsac import RansacOptions
from dsac_ros.evaluation import FrameRecord, compute_metrics
from dsac_ros.geometry import pose_errors
from dsac_ros.status import Status
from dsac_ros.localizer import Localizer
from dsac_ros.mapfile import load_map
from fixtures_maps import FIT_STRIDE, build_tiny_map

# One torch thread per module (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# DSAC*'s 10 px threshold is for 640 x 480 images; these are 160 x 120.
TINY_RANSAC = RansacOptions(inlier_threshold_px=4.0)
# The quick fit is good to a few centimetres on the fitted frames, not to DSAC* accuracy.
FITTED_MAX_TRANSLATION_M, FITTED_MAX_ROTATION_DEG = 0.05, 2.0

@pytest.fixture(scope="module")
def map_path(cache_dir):
    return build_tiny_map(cache_dir)


@pytest.fixture(scope="module")
def localizer(map_path):
    return Localizer(map_path, device="cpu", ransac=TINY_RANSAC)


@pytest.fixture(scope="module")
def fitted_frames():
    return list(get_scene("tiny").render_frames("mapping", stride=FIT_STRIDE))


@pytest.fixture(scope="module")
def unseen_frames():
    return list(get_scene("tiny").render_frames("test", stride=4))


def test_fitted_frames_localise_and_errors_match_evaluation(localizer, fitted_frames, unseen_frames):
    frames = fitted_frames + unseen_frames
    results = [localizer.localize(f.image_rgb, f.intrinsics, seed=i) for i, f in enumerate(frames)]
    records = [FrameRecord.from_result(r, f.world_T_cam, f.stamp_ns, f.name) for r, f in zip(results, frames)]
    metrics = compute_metrics(records)

    expected = []
    for result, frame in zip(results, frames):
        if result.success:
            translation_m, rotation_deg = pose_errors(result.world_T_cam, frame.world_T_cam)
            expected.append((float(translation_m), float(rotation_deg)))
        else:
            assert result.status == "LOST" and result.world_T_cam is None and result.reason
            expected.append((np.inf, np.inf))
    expected = np.array(expected)
    assert np.allclose([r.errors() for r in records], expected)
    within = (expected[:, 0] < 0.05) & (expected[:, 1] < 5)
    assert metrics["pct_5cm_5deg"] == pytest.approx(100 * within.mean())
    assert metrics["frames"] == len(frames) and metrics["localized"] == sum(r.success for r in results)

    fitted = expected[:len(fitted_frames)]
    assert np.all(fitted[:, 0] < FITTED_MAX_TRANSLATION_M) and np.all(fitted[:, 1] < FITTED_MAX_ROTATION_DEG), fitted
    for result in results[:len(fitted_frames)]:
        assert result.status == "OK" and result.reason == ""
        assert result.inlier_count >= 50 and 0 < result.inlier_ratio <= 1
        assert result.inlier_ratio == pytest.approx(result.inlier_count / result.correspondences)
        assert result.correspondences == 15 * 20
        assert result.hypotheses_valid > 0 and result.score > 0
        covariance = result.covariance_6x6
        assert covariance.shape == (6, 6) and np.all(np.isfinite(covariance))
        assert np.allclose(covariance, covariance.T) and np.all(np.linalg.eigvalsh(covariance) > 0)
        assert set(result.timings_ms) >= {"network", "ransac", "total"}
        assert result.timings_ms["total"] >= result.timings_ms["network"] + result.timings_ms["ransac"] - 1e-6
        assert result.device == "cpu"


def test_evaluate_verb_reports_what_the_localizer_returns(localizer, map_path, fitted_frames, tmp_path):
    data = tmp_path / "recording"
    write_folder(fitted_frames, data)
    report = tmp_path / "report"
    assert cli_main(["evaluate", str(data), "--map", str(map_path), "--report", str(report), "--device", "cpu",
                     "--inlier-threshold", str(TINY_RANSAC.inlier_threshold_px), "--seed", "5", "--quiet",
                     "--no-plots"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    direct = []
    for index, frame in enumerate(fitted_frames):  # the verb seeds frame i with seed + i
        result = localizer.localize(frame.image_rgb, frame.intrinsics, seed=5 + index)
        direct.append(pose_errors(result.world_T_cam, frame.world_T_cam))
    direct = np.array(direct, dtype=np.float64)
    assert metrics["frames"] == len(fitted_frames) and metrics["localized"] == len(fitted_frames)
    assert metrics["pct_5cm_5deg"] == pytest.approx(100 * np.mean((direct[:, 0] < 0.05) & (direct[:, 1] < 5)))
    # The folder stores the images losslessly, so the verb sees the same pixels.
    assert metrics["median_translation_cm"] == pytest.approx(100 * np.median(direct[:, 0]), abs=1e-6)
    assert metrics["median_rotation_deg"] == pytest.approx(np.median(direct[:, 1]), abs=1e-6)
    assert metrics["run"]["device"].startswith("cpu")
    assert len((report / "est.txt").read_text().splitlines()) == len(fitted_frames)


def test_evaluate_verb_refuses_a_bad_map_with_its_reason(tmp_path, fitted_frames, capsys):
    data = tmp_path / "recording"
    write_folder(fitted_frames[:1], data)
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not really")
    assert cli_main(["evaluate", str(data), "--map", str(tmp_path / "bad.pt"), "--quiet"]) == 2
    assert "truncated" in capsys.readouterr().err


def test_evaluate_verb_refuses_an_unknown_backend_with_the_choices(map_path, tmp_path, fitted_frames, capsys):
    data = tmp_path / "recording"
    write_folder(fitted_frames[:1], data)
    assert cli_main(["evaluate", str(data), "--map", str(map_path), "--backend", "tensorrt", "--quiet"]) == 2
    assert "unknown backend 'tensorrt'; choose from auto, torch, onnxruntime" in capsys.readouterr().err


def test_same_seed_same_pose(localizer, fitted_frames):
    frame = fitted_frames[1]
    first = localizer.localize(frame.image_rgb, frame.intrinsics, seed=11)
    second = localizer.localize(frame.image_rgb, frame.intrinsics, seed=11)
    assert np.array_equal(first.world_T_cam, second.world_T_cam)


def test_the_covariance_floor_applies_per_call_and_by_default(localizer, fitted_frames):
    from dsac_ros.covariance import NO_FLOOR, CovarianceFloor

    frame = fitted_frames[1]
    raw = localizer.localize(frame.image_rgb, frame.intrinsics, seed=11, covariance_floor=NO_FLOOR)
    default = localizer.localize(frame.image_rgb, frame.intrinsics, seed=11)
    wide = localizer.localize(frame.image_rgb, frame.intrinsics, seed=11,
                              covariance_floor=CovarianceFloor(position_m=1.0, rotation_deg=10.0))
    assert raw.success and default.success and wide.success
    assert np.array_equal(raw.world_T_cam, wide.world_T_cam)  # the floor never moves the pose
    sigma = np.array([1.0] * 3 + [np.radians(10.0)] * 3)
    assert np.linalg.eigvalsh(wide.covariance_6x6 / np.outer(sigma, sigma)).min() >= 1.0 - 1e-9
    # The tiny map is uncalibrated, so its raw covariance lies below a 1 m / 10 deg floor.
    assert np.linalg.eigvalsh(raw.covariance_6x6 / np.outer(sigma, sigma)).min() < 1.0
    floor = localizer.covariance_floor
    sigma = np.array([floor.position_m] * 3 + [floor.rotation_rad] * 3)
    assert np.linalg.eigvalsh(default.covariance_6x6 / np.outer(sigma, sigma)).min() >= 1.0 - 1e-9


def test_rgbd_localisation_uses_depth(localizer, fitted_frames):
    frame = fitted_frames[2]
    depth = frame.depth_m.copy()
    depth[:, :40] = np.nan  # missing depth in part of the image is fine
    result = localizer.localize(frame.image_rgb, frame.intrinsics, depth_m=depth, seed=0)
    assert result.success
    translation_m, rotation_deg = pose_errors(result.world_T_cam, frame.world_T_cam)
    assert translation_m < FITTED_MAX_TRANSLATION_M and rotation_deg < FITTED_MAX_ROTATION_DEG


def test_ransac_options_are_given_per_call_and_never_change_the_localizer(map_path, fitted_frames):
    localizer = Localizer(map_path, device="cpu", ransac=TINY_RANSAC)
    frame = fitted_frames[0]
    assert localizer.localize(frame.image_rgb, frame.intrinsics, seed=0).success
    lost = localizer.localize(frame.image_rgb, frame.intrinsics, seed=0,
                              ransac=dataclasses.replace(TINY_RANSAC, min_inliers=100_000))
    assert lost.status == Status.LOST == "LOST" and "inliers" in lost.reason and lost.world_T_cam is None
    assert lost.covariance_6x6 is None and np.isfinite(lost.score)
    assert localizer.ransac == TINY_RANSAC  # the call's options were its own
    again = localizer.localize(frame.image_rgb, frame.intrinsics, seed=0,
                               ransac=RansacOptions(hypotheses=16, inlier_threshold_px=4.0))
    assert again.success and again.hypotheses_valid <= 16
    # The seed argument wins over the options' seed: the same draw as the default call.
    first = localizer.localize(frame.image_rgb, frame.intrinsics, seed=0)
    seeded = localizer.localize(frame.image_rgb, frame.intrinsics, seed=0,
                                ransac=dataclasses.replace(TINY_RANSAC, seed=123))
    np.testing.assert_array_equal(first.world_T_cam, seeded.world_T_cam)  # same code, same seed: bitwise
    with pytest.raises(TypeError):
        localizer.localize(frame.image_rgb, frame.intrinsics, ransac={"hypotheses": 8})
    with pytest.raises(TypeError):
        localizer.ransac = {"hypotheses": 8}
    assert localizer.ransac == TINY_RANSAC


def _bad_inputs(frame):
    image, intrinsics = frame.image_rgb, frame.intrinsics
    h, w = image.shape[:2]
    return {
        "float image": (image.astype(np.float32), intrinsics, None, "uint8"),
        "4 channels": (np.zeros((h, w, 4), np.uint8), intrinsics, None, "shape"),
        "list": (image.tolist(), intrinsics, None, "numpy array"),
        "tiny image": (image[:8, :8], intrinsics.resized(8, 8), None, "at least"),
        "intrinsics for another size": (image, intrinsics.resized(2 * w, 2 * h), None, "rescale"),
        "K matrix instead of Intrinsics": (image, intrinsics.K, None, "Intrinsics"),
        "all black": (np.zeros_like(image), intrinsics, None, "all black"),
        "NaN depth": (image, intrinsics, np.full((h, w), np.nan, np.float32), "no valid pixels"),
        "depth of another size": (image, intrinsics, np.ones((h // 2, w // 2), np.float32), "registered"),
        "depth in millimetres": (image, intrinsics, np.ones((h, w), np.uint16), "float metres"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs(get_scene("tiny").render_frames("test").__next__())))
def test_bad_input_is_a_status_not_an_exception(localizer, unseen_frames, case):
    image, intrinsics, depth, words = _bad_inputs(unseen_frames[0])[case]
    result = localizer.localize(image, intrinsics, depth_m=depth)
    assert result.status == "BAD_INPUT" and not result.success
    assert words in result.reason
    assert result.world_T_cam is None and result.covariance_6x6 is None
    assert result.timings_ms["total"] >= 0 and result.timings_ms["network"] == 0.0


def test_grayscale_images_are_accepted(localizer, fitted_frames):
    frame = fitted_frames[0]
    gray = (frame.image_rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
    result = localizer.localize(gray, frame.intrinsics, seed=0)
    assert result.success and pose_errors(result.world_T_cam, frame.world_T_cam)[0] < FITTED_MAX_TRANSLATION_M


def test_num_threads_option(map_path):
    threads = torch.get_num_threads()
    try:
        Localizer(map_path, device="cpu", num_threads=2)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="num_threads"):
            Localizer(map_path, device="cpu", num_threads=0)
    finally:
        torch.set_num_threads(threads)


def test_dsac_runs_with_its_own_thread_count_and_restores_torchs(localizer, fitted_frames, monkeypatch):
    # ransac.threads sets torch's threads for the DSAC step only (a spy records the count the real
    # estimate_pose ran with); the encoder and lookup keep the process's setting, restored afterwards
    # even when DSAC raises; the pose does not depend on the count (same seed, same hypotheses).
    import dsac_ros.localizer as localizer_module

    seen, real = [], localizer_module.estimate_pose

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(localizer_module, "estimate_pose", spy)
    frame = fitted_frames[1]
    before = torch.get_num_threads()
    poses = {}
    for threads in (2, 1, 0):
        result = localizer.localize(frame.image_rgb, frame.intrinsics, seed=5,
                                    ransac=dataclasses.replace(localizer.ransac, threads=threads))
        assert result.success and torch.get_num_threads() == before
        poses[threads] = result.world_T_cam
    assert seen == [2, 1, before]
    np.testing.assert_allclose(poses[2], poses[1], atol=1e-4)  # float sums in another order, same hypothesis

    def failing(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(localizer_module, "estimate_pose", failing)
    with pytest.raises(RuntimeError, match="exploded"):
        localizer.localize(frame.image_rgb, frame.intrinsics, seed=5, ransac=dataclasses.replace(localizer.ransac, threads=2))
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 0"):
        RansacOptions(threads=-1)


def test_device_cpu_is_logged(map_path, caplog):
    with caplog.at_level(logging.INFO, logger="dsac_ros.localizer"):
        localizer = Localizer(load_map(map_path), device="cpu")
    assert localizer.device == torch.device("cpu")
    assert "on cpu" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(map_path):
    with pytest.raises(DeviceError, match="cuda.*requested but"):
        Localizer(map_path, device="cuda")


def test_input_height_override(map_path, fitted_frames):
    localizer = Localizer(map_path, device="cpu", ransac=RansacOptions(hypotheses=4, inlier_threshold_px=4.0),
                          input_height_px=96)
    frame = fitted_frames[0]
    result = localizer.localize(frame.image_rgb, frame.intrinsics, seed=0)
    assert result.correspondences == 12 * 16  # 160x120 -> 128x96 input -> 16x12 cells
    with pytest.raises(ValueError, match="multiple of 8"):
        Localizer(map_path, device="cpu", input_height_px=60)


def test_the_dsac_step_alone_gives_what_localize_gives(map_path, fitted_frames):
    """Mapping validation localises predicted coordinates with localize_coordinates: the same
    estimate, to the bit, as the full call on the image."""
    from dsac_ros.localizer import localize_coordinates

    localizer = Localizer(map_path, device="cpu", ransac=TINY_RANSAC)
    frame = fitted_frames[0]
    full = localizer.localize(frame.image_rgb, frame.intrinsics, seed=3)
    coords, pixels, grid_hw = localizer.predict(frame.image_rgb)
    alone = localize_coordinates(coords, torch.as_tensor(pixels), frame.intrinsics,
                                 dataclasses.replace(TINY_RANSAC, seed=3), grid_hw=grid_hw)
    assert full.status == alone.status == Status.OK and full.inlier_count == alone.inlier_count
    np.testing.assert_array_equal(full.world_T_cam, alone.world_T_cam)  # same code, same inputs
