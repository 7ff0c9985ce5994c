"""Sub-cell positions of memory matches (dsac_ros.subcell): the parabola step, and on the tiny
scene, correspondences that land closer to where the truth projects than cell centres do."""

import numpy as np
import pytest
import torch

from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import invert_pose, project_points, transform_points
from dsac_ros.localizer import Localizer
from dsac_ros.network import cell_centers_px
from dsac_ros.subcell import MAX_OFFSET_CELLS, grid_layout, parabolic_minimum, subcell_offsets, subcell_offsets_at
from fixtures_maps import tiny_memory_map_path  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_parabola_finds_the_minimum_of_a_quadratic_and_refuses_a_maximum():
    true = torch.tensor([-0.4, -0.1, 0.0, 0.25, 0.45], dtype=torch.float64)
    d = lambda x: 3.0 * (x - true) ** 2 + 1.0  # noqa: E731
    torch.testing.assert_close(parabolic_minimum(d(-1.0), d(0.0), d(1.0)), true)
    # No minimum at the centre (a maximum, or flat), or a missing neighbour: stay at the centre.
    assert parabolic_minimum(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0])).item() == 0.0
    assert parabolic_minimum(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([1.0])).item() == 0.0
    assert parabolic_minimum(torch.tensor([float("inf")]), torch.tensor([0.0]), torch.tensor([1.0])).item() == 0.0
    # A minimum beyond the neighbours is clamped to the cell.
    far = parabolic_minimum(torch.tensor([5.0]), torch.tensor([1.0]), torch.tensor([0.9]))
    assert far.item() == MAX_OFFSET_CELLS


def test_a_key_between_two_cells_is_placed_between_them():
    # Features that vary linearly across a 4 x 5 grid: a key made halfway between cells (1, 2) and
    # (1, 3) peaks at dx = +1/2 from (1, 2) (the distance is an exact parabola here).
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    features = torch.stack([cols, rows, torch.ones_like(rows)], -1)  # (4, 5, 3)
    key = torch.tensor([[2.3, 1.0, 1.0], [0.0, -0.2, 1.0]])
    offsets = subcell_offsets_at(features, torch.tensor([1 * 5 + 2, 0]), key)
    torch.testing.assert_close(offsets[0], torch.tensor([0.3, 0.0]))
    assert offsets[1].tolist() == [0.0, 0.0]  # at the corner the missing neighbours keep the centre
    grid = subcell_offsets(features, features)  # every cell's own feature: no shift anywhere
    assert grid.shape == (4, 5, 2) and grid.abs().max() == 0



@pytest.mark.parametrize("height, width", [(30, 40), (1, 5), (4, 1), (1, 1)])
def test_the_whole_grid_step_equals_the_per_cell_step(height, width):
    # subcell_offsets (shifted views of the grid) must give subcell_offsets_at's offsets (gathered
    # neighbours) for every cell: the same squared distances, so the same values, border cells included.
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(height, width, 16, generator=generator)
    order = torch.randperm(height * width, generator=generator)  # keys of other cells, slightly off
    keys = (features.reshape(-1, 16)[order] + 0.3 * torch.randn(height * width, 16, generator=generator))
    per_cell = subcell_offsets_at(features, torch.arange(height * width), keys).reshape(height, width, 2)
    torch.testing.assert_close(subcell_offsets(features, keys.reshape(height, width, 16)), per_cell,
                               rtol=0, atol=1e-4)  # float sums in another order
    if height * width > 100:
        assert (per_cell != 0).float().mean() > 0.3  # the comparison covers moved cells, not only zeros

def test_grid_layout_recognises_only_a_whole_row_major_grid():
    pixels = torch.tensor(cell_centers_px(4, 3, (32, 24), (64, 48)))  # 3 rows of 4 cells, 16 px apart
    (height, width), cell_px = grid_layout(pixels)
    assert (height, width) == (3, 4) and cell_px.tolist() == [16.0, 16.0]
    assert grid_layout(pixels[:-1]) is None  # a cell missing (e.g. one without depth)
    assert grid_layout(pixels.flip(0)) is None  # not row-major


def _median_correspondence_error_px(localizer: Localizer) -> float:
    errors = []
    for frame in get_scene("tiny").render_frames("test"):
        coords_world, pixels_xy, _ = localizer.predict(frame.image_rgb)
        cam = transform_points(invert_pose(frame.world_T_cam), coords_world.double().numpy())
        errors.append(np.linalg.norm(project_points(cam, frame.intrinsics.K) - pixels_xy, axis=1)[cam[:, 2] > 0])
    return float(np.median(np.concatenate(errors)))


def test_the_subcell_step_lowers_the_correspondence_error_on_the_tiny_scene(tiny_memory_map_path):
    # Each correspondence pairs a query pixel with the 3D point of the matched mapping cell; the error
    # is how far that point projects (true pose) from the pixel. Cells are 10 px here (96-px input
    # of 160 x 120 frames). Measured: median 4.46 px at cell centres, 3.44 px with the sub-cell step.
    localizer = Localizer(tiny_memory_map_path, device="cpu", subcell=False)
    centre_px = _median_correspondence_error_px(localizer)
    localizer.subcell = True
    subcell_px = _median_correspondence_error_px(localizer)
    assert subcell_px < 0.88 * centre_px, (centre_px, subcell_px)
