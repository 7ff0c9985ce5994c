"""Scene coordinate network: shapes, the cell <-> pixel mapping, and the encoder/head split."""

import numpy as np
import pytest
import torch

from dsac_ros.camera import Intrinsics
from dsac_ros.geometry import project_points
from dsac_ros.network import (NETWORK_CONFIGS, backproject_depth_at, build_network, cell_centers_px,
                              network_config, network_input_size, prepare_input)


# "memory" is a template: its frames and cells are set by mapping (test_memory_head covers it).
@pytest.mark.parametrize("name", [name for name in NETWORK_CONFIGS if name != "memory"])
def test_output_is_stride_8_and_offset_by_scene_center(name):
    torch.manual_seed(0)
    network = build_network(name, scene_center_m=(0.0, 0.0, 0.0)).eval()
    image = torch.randn(1, 1, 48, 64)
    with torch.no_grad():
        coords = network(image)
        network.set_scene_center((1.0, -2.0, 3.0))
        shifted = network(image)
    assert coords.shape == (1, 3, 6, 8)
    assert torch.allclose(shifted - coords, torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1), atol=1e-5)


def test_input_must_be_multiple_of_stride():
    network = build_network("fast")
    with pytest.raises(ValueError, match="multiple of 8"):
        network(torch.zeros(1, 1, 50, 64))


def test_head_maps_each_cell_independently_so_it_trains_on_buffered_features():
    torch.manual_seed(1)
    network = build_network("fast", scene_center_m=(0.5, 0.5, 0.5)).eval()
    with torch.no_grad():
        features = network.encoder(torch.randn(1, 1, 32, 40))  # (1, C, 4, 5)
        full = network.coords_from_features(features)
        buffered = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1], 1, 1)  # (N, C, 1, 1)
        per_cell = network.coords_from_features(buffered).reshape(4, 5, 3).permute(2, 0, 1)
    assert torch.allclose(full[0], per_cell, atol=1e-5)


def test_unknown_or_malformed_config_is_refused():
    with pytest.raises(ValueError, match="unknown network"):
        network_config("huge")
    with pytest.raises(ValueError, match="invalid network config"):
        network_config({"encoder": {"channels": [8, 8, 8, 8]}})


def test_input_size_keeps_aspect_and_rounds_to_stride():
    assert network_input_size(640, 480, 240) == (320, 240)
    assert network_input_size(640, 360, 240) == (424, 240)  # 426.7 rounded to a multiple of 8
    with pytest.raises(ValueError):
        network_input_size(640, 480, 250)


@pytest.mark.parametrize("image_size", [(640, 480), (640, 360), (320, 240)])
def test_cell_centres_are_where_the_resized_camera_sees_the_same_ray(image_size):
    """A point projecting to cell centre (8x+4, 8y+4) of the network input, under the resized
    intrinsics, projects to cell_centers_px under the original intrinsics."""
    width, height = image_size
    intrinsics = Intrinsics(525.0 * width / 640, 520.0 * height / 480, 0.52 * width, 0.47 * height, width, height)
    input_size = network_input_size(width, height, 240)
    resized = intrinsics.resized(*input_size)
    cells_w, cells_h = input_size[0] // 8, input_size[1] // 8
    centres_input = cell_centers_px(cells_w, cells_h, input_size, input_size)
    assert np.allclose(centres_input[:cells_w + 1], np.r_[[[8 * x + 4, 4] for x in range(cells_w)], [[4, 12]]])
    depth = 2.0
    points_cam = np.c_[(centres_input - [resized.cx_px, resized.cy_px]) / [resized.fx_px, resized.fy_px] * depth,
                       np.full(len(centres_input), depth)]
    expected = project_points(points_cam, intrinsics.K)
    assert np.allclose(cell_centers_px(cells_w, cells_h, input_size, image_size), expected, atol=1e-9)


def test_prepare_input_normalises_gray_like_dsacstar():
    image = np.full((480, 640, 3), 102, dtype=np.uint8)  # 102 / 255 = 0.4 = the mean
    image[:, :320] = 255
    prepared = prepare_input(image, 240)
    assert prepared.tensor.shape == (1, 1, 240, 320)
    assert prepared.input_size == (320, 240) and prepared.image_size == (640, 480)
    assert torch.allclose(prepared.tensor[0, 0, :, -10:], torch.zeros(240, 10), atol=1e-6)
    assert torch.allclose(prepared.tensor[0, 0, :, :10], torch.full((240, 10), 0.6 / 0.25), atol=1e-5)
    assert prepared.cell_centers_px().shape == (30 * 40, 2)


def test_backprojected_depth_reprojects_to_its_pixels_and_flags_invalid():
    intrinsics = Intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    depth = np.full((480, 640), 2.5, dtype=np.float32)
    depth[:, :100] = 0.0
    depth[:50, :] = np.nan
    pixels = np.array([[10.0, 300.0], [400.0, 20.0], [400.0, 300.0], [639.0, 479.0]])
    points, valid = backproject_depth_at(depth, intrinsics, pixels)
    assert valid.tolist() == [False, False, True, True]
    assert np.all(np.isfinite(points))
    assert np.allclose(project_points(points[valid], intrinsics.K), pixels[valid])
    assert np.allclose(points[valid, 2], 2.5)
