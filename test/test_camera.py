"""The camera module: CameraInfo-like records -> intrinsics + distortion, undistortion, and the
inverse map the renderer draws distorted images with. ROS-free: records are plain objects."""

from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest

from dsac_ros.camera import (CameraInfoError, CameraModel, Intrinsics, Undistorter, camera_model_from_info,
                             distorted_pixel_map)

RNG = np.random.default_rng(7)


@dataclass
class Roi:
    x_offset: int = 0
    y_offset: int = 0
    width: int = 0
    height: int = 0


@dataclass
class Info:
    """The fields of sensor_msgs/CameraInfo that the camera module reads."""

    width: int = 64
    height: int = 48
    k: tuple = (50.0, 0, 30.5, 0, 55.0, 20.25, 0, 0, 1)
    d: tuple = ()
    distortion_model: str = "plumb_bob"
    binning_x: int = 0
    binning_y: int = 0
    roi: Roi = field(default_factory=Roi)


def test_intrinsics_come_from_k_not_the_image_centre():
    model = camera_model_from_info(Info())
    assert model.intrinsics.as_tuple() == (50.0, 55.0, 30.5, 20.25)
    assert (model.intrinsics.width_px, model.intrinsics.height_px) == (64, 48)
    assert not model.is_distorted
    # All-zero coefficients of any model need no undistortion.
    assert not camera_model_from_info(Info(d=(0, 0, 0, 0, 0), distortion_model="unknown_model")).is_distorted


@pytest.mark.parametrize("info, reason", [
    (Info(k=(0,) * 9), "uncalibrated"),
    (Info(width=0), "no image size"),
    (Info(d=(0.1, 0, 0, 0, 0), distortion_model="some_custom_model"), "'some_custom_model' with nonzero"),
    (Info(d=(0.1, 0, 0), distortion_model="plumb_bob"), "3 coefficients"),
    (Info(d=(0.1, 0, 0, 0, 0), distortion_model="equidistant"), "equidistant distortion needs 4"),
    (Info(d=(np.nan, 0, 0, 0, 0)), "non-finite"),
    (Info(binning_x=2), "binning"),
    (Info(roi=Roi(4, 4, 32, 24)), "region of interest"),
])
def test_unusable_camera_info_is_refused_with_a_reason(info, reason):
    with pytest.raises(CameraInfoError, match=reason):
        camera_model_from_info(info)


def test_a_camera_info_for_another_image_size_is_refused_and_a_sizeless_one_takes_the_images():
    with pytest.raises(CameraInfoError, match="CameraInfo is for 64x48 images, but the image is 128x96"):
        camera_model_from_info(Info(), image_size=(128, 96))
    model = camera_model_from_info(Info(width=0, height=0), image_size=(64, 48))
    assert (model.intrinsics.width_px, model.intrinsics.height_px) == (64, 48)


@pytest.mark.parametrize("model_name, coefficients", [
    ("plumb_bob", (-0.3, 0.1, 0.001, -0.002, 0.0)),
    ("rational_polynomial", (-0.3, 0.1, 0.001, -0.002, 0.0, 0.01, 0.0, 0.0)),
])
def test_undistortion_moves_a_distorted_point_back_to_its_pinhole_position(model_name, coefficients):
    width, height = 160, 120
    model = camera_model_from_info(Info(width, height, (100.0, 0, 82.0, 0, 100.0, 57.0, 0, 0, 1), coefficients,
                                        model_name))
    assert model.is_distorted
    K = model.intrinsics.K
    pinhole_px = np.array([30.0, 25.0])
    # Where the lens puts that ray in the distorted image.
    ray = np.array([[(pinhole_px[0] - K[0, 2]) / K[0, 0], (pinhole_px[1] - K[1, 2]) / K[1, 1], 1.0]])
    distorted_px, _ = cv2.projectPoints(ray, np.zeros(3), np.zeros(3), K, model.distortion)
    distorted_px = distorted_px.reshape(2)
    assert np.linalg.norm(distorted_px - pinhole_px) > 5.0  # the test needs a visible shift
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, tuple(int(round(v)) for v in distorted_px), 2, (255, 255, 255), -1)
    undistorted = Undistorter().undistort_rgb(image, model)
    ys, xs = np.nonzero(undistorted[:, :, 0] > 128)
    assert np.hypot(xs.mean() - pinhole_px[0], ys.mean() - pinhole_px[1]) < 1.0


@pytest.mark.parametrize("model_name, coefficients", [
    ("plumb_bob", (-0.25, 0.07, 0.0005, -0.001, 0.0)),
    ("equidistant", (0.05, -0.01, 0.002, 0.0)),
])
def test_the_rendering_map_inverts_the_undistortion(model_name, coefficients):
    """distorted_pixel_map says where each distorted pixel falls in the pinhole image; undistorting
    takes it back: the composition is the identity to a small fraction of a pixel."""
    model = CameraModel(Intrinsics(120.0, 118.0, 80.5, 59.0, 160, 120), model_name, np.array(coefficients))
    map_x, map_y = distorted_pixel_map(model)
    undistort_x, undistort_y = Undistorter()._maps_for(model)
    # Pinhole pixels well inside the image: where is each in the distorted image, and back.
    v, u = np.mgrid[20:100:7, 20:140:7]
    distorted_x = cv2.remap(undistort_x, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR)
    distorted_y = cv2.remap(undistort_y, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR)
    back_x = cv2.remap(map_x, distorted_x, distorted_y, cv2.INTER_LINEAR)
    back_y = cv2.remap(map_y, distorted_x, distorted_y, cv2.INTER_LINEAR)
    # Bilinear sampling of smooth maps twice: errors of ~0.01 px; 0.05 px is the bound.
    assert np.abs(back_x - u).max() < 0.05 and np.abs(back_y - v).max() < 0.05


def test_depth_undistortion_invents_no_depth_values():
    model = camera_model_from_info(Info(d=(-0.2, 0.05, 0, 0, 0)))
    depth = np.where(RNG.random((48, 64)) < 0.5, 1.0, 3.0).astype(np.float32)
    undistorted = Undistorter().undistort_depth(depth, model)
    assert set(np.unique(undistorted)) <= {0.0, 1.0, 3.0}
