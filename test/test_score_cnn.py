"""Error images and the DSAC 2017 score CNN."""

import pytest
import torch

from dsac_ros.score_cnn import ScoreCNN, error_images

# One torch thread per module (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_error_images_clamp_scale_and_resize():
    residuals = torch.tensor([[0.0, 50.0, 100.0, 500.0, 25.0, 75.0]])  # a 2x3 grid
    images = error_images(residuals, (2, 3), max_residual_px=100.0, image_size=4)
    assert images.shape == (1, 1, 4, 4)
    assert images.min() >= 0.0 and images.max() <= 1.0  # 500 px clamps to 1
    same = error_images(residuals, (2, 3), 100.0, image_size=2 * 3)  # grid -> larger image keeps values
    assert set(torch.unique(same).tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    with pytest.raises(ValueError):
        error_images(residuals, (2, 2), 100.0)


def test_error_image_keeps_the_row_major_grid_layout():
    residuals = torch.zeros(1, 40 * 40)
    residuals[0, :40] = 100.0  # first grid row all outliers
    image = error_images(residuals, (40, 40), 100.0)
    assert torch.all(image[0, 0, 0] == 1.0) and torch.all(image[0, 0, 1:] == 0.0)


def test_score_cnn_maps_images_to_one_score_each_and_is_trainable():
    torch.manual_seed(0)
    cnn = ScoreCNN()
    images = torch.rand(5, 1, 40, 40)
    scores = cnn(images)
    assert scores.shape == (5,) and torch.isfinite(scores).all()
    # a few steps teach it to prefer images with small errors (more inliers)
    good, bad = torch.rand(8, 1, 40, 40) * 0.2, 0.8 + torch.rand(8, 1, 40, 40) * 0.2
    optimizer = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    for _ in range(30):
        loss = torch.nn.functional.softplus(cnn(bad) - cnn(good)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (cnn(good) > cnn(bad)).all()
