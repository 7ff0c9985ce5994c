"""Message <-> numpy conversions of the ROS adapter (messages built in-process, no DDS needed)."""

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dsac_ros.data.images import ImageDecodeError, encode_compressed, encode_image
from dsac_ros.geometry import make_pose, pose_errors, rotation_from_axis_angle
from dsac_ros.camera import CameraInfoError, camera_model_from_info
from dsac_ros.ros.conversions import (compressed_msg_to_rgb, covariance_for_attached_frame, covariance_to_msg, depth_msg_to_m,
                                      image_msg_to_rgb, matrix_to_pose, matrix_to_transform, ns_to_stamp,
                                      pose_to_matrix, stamp_to_ns, transform_to_matrix)
from tolerances import check_below

RNG = np.random.default_rng(7)


def image_msg(image, encoding, padding=0):
    step, data = encode_image(image, encoding, row_padding_bytes=padding)
    msg = Image(encoding=encoding, height=image.shape[0], width=image.shape[1], step=step)
    msg.data = data
    return msg


def camera_info(width=64, height=48, k=(50.0, 0, 30.5, 0, 55.0, 20.25, 0, 0, 1), d=(), model="plumb_bob"):
    msg = CameraInfo(width=width, height=height, distortion_model=model)
    msg.k = [float(v) for v in k]
    msg.d = [float(v) for v in d]
    return msg


def test_stamp_round_trip_keeps_nanoseconds():
    stamp_ns = 1_700_000_123_456_789_012
    stamp = ns_to_stamp(stamp_ns)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_123, 456_789_012)
    assert stamp_to_ns(stamp) == stamp_ns


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_images_decode_to_rgb_with_padded_rows(encoding):
    image = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    rgb = image_msg_to_rgb(image_msg(image, encoding, padding=3))
    assert rgb.shape == (6, 5, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, image)


def test_unknown_encoding_names_itself():
    msg = image_msg(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.encoding = "yuv422_weird"
    with pytest.raises(ImageDecodeError, match="yuv422_weird"):
        image_msg_to_rgb(msg)


def test_depth_and_compressed_images():
    depth = np.array([[0.5, np.nan], [2.0, 0.0]], dtype=np.float32)
    decoded = depth_msg_to_m(image_msg(depth, "32FC1"))
    assert np.allclose(decoded, [[0.5, 0.0], [2.0, 0.0]])
    image = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    fmt, data = encode_compressed(image, "png")
    msg = CompressedImage(format=fmt)
    msg.data = data
    assert np.array_equal(compressed_msg_to_rgb(msg), image)


def test_an_rclpy_camera_info_message_reads_through_the_camera_module():
    # The camera module (test_camera.py) reads any record with CameraInfo's fields; rclpy's is one.
    model = camera_model_from_info(camera_info(d=(-0.2, 0.05, 0, 0, 0)))
    assert model.intrinsics.as_tuple() == (50.0, 55.0, 30.5, 20.25) and model.is_distorted
    with pytest.raises(CameraInfoError, match="uncalibrated"):
        camera_model_from_info(camera_info(k=(0,) * 9))


def test_pose_and_transform_round_trips():
    a_T_b = make_pose(rotation_from_axis_angle([0.3, -1.2, 2.0]), [1.0, -2.0, 0.5])
    for back in (pose_to_matrix(matrix_to_pose(a_T_b)), transform_to_matrix(matrix_to_transform(a_T_b))):
        translation_m, rotation_deg = pose_errors(back, a_T_b)
        check_below("translation_m", translation_m, 1e-12)
        check_below("rotation_deg", rotation_deg, 1e-6)


def test_covariance_message_is_row_major_and_never_nan():
    covariance = np.diag([1.0, 2, 3, 4, 5, 6])
    covariance[0, 5] = covariance[5, 0] = 0.5
    values = covariance_to_msg(covariance)
    assert len(values) == 36 and values[5] == 0.5 and values[7] == 2.0 and values[35] == 6.0
    for bad in (np.full((6, 6), np.nan), -np.eye(6), np.eye(3), np.triu(np.ones((6, 6)))):
        with pytest.raises(ValueError):
            covariance_to_msg(bad)


def test_attached_frame_covariance_matches_finite_differences():
    map_T_cam = make_pose(rotation_from_axis_angle([0.4, 0.1, -0.7]), [1.0, 2.0, 0.3])
    cam_T_base = make_pose(rotation_from_axis_angle([1.0, -0.5, 0.2]), [0.1, -0.4, -0.3])
    # Numerical Jacobian of the base pose w.r.t. a left perturbation (d position, d rotation) of the camera.
    eps = 1e-6
    jacobian = np.zeros((6, 6))
    base = map_T_cam @ cam_T_base
    for i in range(6):
        delta = np.zeros(6)
        delta[i] = eps
        perturbed_cam = map_T_cam.copy()
        perturbed_cam[:3, :3] = rotation_from_axis_angle(delta[3:]) @ map_T_cam[:3, :3]
        perturbed_cam[:3, 3] += delta[:3]
        perturbed_base = perturbed_cam @ cam_T_base
        jacobian[:3, i] = (perturbed_base[:3, 3] - base[:3, 3]) / eps
        skew = (perturbed_base[:3, :3] @ base[:3, :3].T - np.eye(3)) / eps
        jacobian[3:, i] = [skew[2, 1], skew[0, 2], skew[1, 0]]
    covariance = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5])
    expected = jacobian @ covariance @ jacobian.T
    assert np.allclose(covariance_for_attached_frame(covariance, map_T_cam, cam_T_base), expected, atol=1e-9)
