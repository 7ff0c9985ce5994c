"""Sensor effects: seeded and deterministic, and each changes the frames as specified (measured
on flat patches, where the expected statistics are known in closed form)."""

from __future__ import annotations

import numpy as np
import pytest

from dsac_ros.camera import Intrinsics
from dsac_ros.data.scenes import get_scene
from dsac_ros.data.sensor import SensorEffects, image_motion_direction, line_kernel
from dsac_ros.frame import Frame
from dsac_ros.geometry import make_pose

K = Intrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)


def flat_frame(grey=128, depth_m=3.0) -> Frame:
    image = np.full((120, 160, 3), grey, np.uint8)
    return Frame(image, K, 0, np.full((120, 160), depth_m, np.float32), np.eye(4), "flat")


def test_the_same_seed_gives_the_same_frames_whatever_the_stride():
    every = list(get_scene("tiny_sensor").render_frames("test"))
    strided = list(get_scene("tiny_sensor").render_frames("test", stride=2))
    for a, b in zip(every[::2], strided):
        assert np.array_equal(a.image_rgb, b.image_rgb) and np.array_equal(a.depth_m, b.depth_m)
    frame = flat_frame()
    first, again = SensorEffects(pixel_noise_sigma=3.0, seed=1), SensorEffects(pixel_noise_sigma=3.0, seed=1)
    assert np.array_equal(first.apply(frame, 5).image_rgb, again.apply(frame, 5).image_rgb)
    assert not np.array_equal(first.apply(frame, 5).image_rgb, first.apply(frame, 6).image_rgb)
    assert not np.array_equal(first.apply(frame, 5).image_rgb, SensorEffects(pixel_noise_sigma=3.0, seed=2)
                              .apply(frame, 5).image_rgb)
    # No effects: the frame is unchanged.
    assert np.array_equal(SensorEffects().apply(frame, 0).image_rgb, frame.image_rgb)


def test_pixel_noise_has_the_sigma_asked_for():
    noisy = SensorEffects(pixel_noise_sigma=3.0).apply(flat_frame(), 0).image_rgb.astype(np.float64)
    # 57,600 samples: the standard deviation is known to 0.3 %; rounding to integers adds 1/12.
    assert np.std(noisy - 128.0) == pytest.approx(np.sqrt(9.0 + 1.0 / 12.0), rel=0.03)
    assert abs(np.mean(noisy) - 128.0) < 0.1


def test_exposure_and_gamma_scale_the_image_as_specified():
    brighter = SensorEffects(exposure_gain=(2.0, 2.0)).apply(flat_frame(grey=64), 0).image_rgb
    assert np.all(np.abs(brighter.astype(int) - 128) <= 1)
    darker = SensorEffects(gamma=(2.0, 2.0)).apply(flat_frame(grey=128), 0).image_rgb
    assert np.all(np.abs(darker.astype(int) - round(255 * (128 / 255) ** 2)) <= 1)


def test_depth_noise_grows_with_range_as_the_kinect_model_says():
    effects = SensorEffects(depth_noise_m=(0.0012, 0.0019, 0.4))
    for z in (1.0, 3.0):
        depth = effects.apply(flat_frame(depth_m=z), 0).depth_m
        expected = 0.0012 + 0.0019 * (z - 0.4) ** 2
        assert np.std(depth - z) == pytest.approx(expected, rel=0.03)


def test_dropout_range_and_edge_holes_remove_depth_where_specified():
    depth = SensorEffects(depth_dropout=0.03).apply(flat_frame(), 0).depth_m
    assert np.mean(depth == 0) == pytest.approx(0.03, abs=0.005)
    assert np.all(SensorEffects(depth_max_m=2.5).apply(flat_frame(depth_m=3.0), 0).depth_m == 0)
    frame = flat_frame(depth_m=2.0)
    frame.depth_m[:, 80:] = 4.0  # a depth edge between columns 79 and 80
    holes = SensorEffects(depth_edge_holes_px=1).apply(frame, 0).depth_m == 0
    assert np.all(holes[:, 78:82]) and not holes[:, :77].any() and not holes[:, 83:].any()


def test_motion_blur_runs_along_the_image_motion():
    frame = flat_frame(depth_m=2.0)
    frame.image_rgb[:, :80] = 20  # a vertical edge
    frame.image_rgb[:60, :, :] = np.minimum(frame.image_rgb[:60], 200)
    # The camera moved along its x axis: the image content moves horizontally.
    previous = make_pose(np.eye(3), [-0.05, 0.0, 0.0])
    direction = image_motion_direction(frame, previous)
    assert abs(abs(direction[0]) - 1.0) < 1e-6 and abs(direction[1]) < 1e-6
    kernel = line_kernel(direction, 7.0)
    assert kernel.sum() == pytest.approx(1.0) and np.count_nonzero(kernel.sum(axis=1)) == 1  # one row: horizontal
    blurred = SensorEffects(motion_blur_px=(7.0, 7.0), motion_blur_fraction=1.0).apply(frame, 0, previous).image_rgb
    row = blurred[90, :, 0].astype(int)
    assert row[70] == 20 and row[90] == 128 and 20 < row[79] < 128  # the vertical edge is smeared
    assert np.array_equal(blurred[:, 20], frame.image_rgb[:, 20])  # away from edges nothing changes


def test_jpeg_changes_a_textured_image_but_not_by_much():
    frame = next(iter(get_scene("tiny").render_frames("test")))
    compressed = SensorEffects(jpeg_quality=90).apply(frame, 0).image_rgb
    error = np.abs(compressed.astype(float) - frame.image_rgb).mean()
    assert 0.1 < error < 4.0


def test_synth_takes_sensor_options_and_refuses_bad_ones(tmp_path, capsys):
    from dsac_ros.cli import main

    assert main(["synth", "tiny", "--out", str(tmp_path / "noisy"), "--format", "folder", "--stride", "12",
                 "--pixel-noise", "3", "--depth-dropout", "0.5", "--quiet"]) == 0
    from dsac_ros.data import read_frames

    frames = list(read_frames(tmp_path / "noisy"))
    clean = list(get_scene("tiny").render_frames("mapping", stride=12))
    assert len(frames) == 2
    assert np.mean(frames[0].depth_m == 0) == pytest.approx(0.5, abs=0.05)
    assert not np.array_equal(frames[0].image_rgb, clean[0].image_rgb)
    assert main(["synth", "tiny", "--out", str(tmp_path / "bad"), "--exposure", "0.5"]) == 2
    assert "takes 2 numbers" in capsys.readouterr().err
