"""The covariance floor: symmetric positive definite output, at least the floor in every direction,
values above it kept."""

import numpy as np
import pytest

from dsac_ros.covariance import NO_FLOOR, CovarianceFloor, apply_floor

FLOOR = CovarianceFloor(position_m=0.005, rotation_deg=0.1)
SIGMA = np.array([0.005] * 3 + [np.radians(0.1)] * 3)


def random_covariance(rng, scale):
    a = rng.normal(size=(6, 6)) * scale
    return a @ a.T


def smallest_whitened_eigenvalue(covariance):
    return np.linalg.eigvalsh(covariance / np.outer(SIGMA, SIGMA)).min()


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0])
def test_the_floor_holds_in_every_direction_and_the_result_is_symmetric_positive_definite(scale):
    rng = np.random.default_rng(3)
    for _ in range(20):
        covariance = random_covariance(rng, scale)
        floored = apply_floor(covariance, FLOOR)
        assert np.array_equal(floored, floored.T)
        # In units of the floor every eigenvalue is at least 1 (to float64 rounding of eigh).
        assert smallest_whitened_eigenvalue(floored) >= 1.0 - 1e-9
        assert np.linalg.eigvalsh(floored).min() > 0
        # Never lower than the input in any direction (Loewner order).
        assert np.linalg.eigvalsh((floored - covariance) / np.outer(SIGMA, SIGMA)).min() >= -1e-9


def test_a_covariance_above_the_floor_is_unchanged_and_a_singular_one_is_lifted():
    rng = np.random.default_rng(4)
    large = random_covariance(rng, 1.0) + np.eye(6)
    assert np.array_equal(apply_floor(large, FLOOR), 0.5 * (large + large.T))
    singular = np.zeros((6, 6))
    singular[0, 0] = 1.0  # all certainty except x
    floored = apply_floor(singular, FLOOR)
    np.testing.assert_allclose(np.diag(floored), [1.0, 0.005 ** 2, 0.005 ** 2] + [np.radians(0.1) ** 2] * 3,
                               rtol=1e-9)


def test_no_floor_only_symmetrises_and_bad_input_is_refused():
    covariance = np.diag([1e-12] * 6)
    assert np.array_equal(apply_floor(covariance, NO_FLOOR), covariance)
    with pytest.raises(ValueError, match="non-finite"):
        apply_floor(np.full((6, 6), np.nan), FLOOR)
    with pytest.raises(ValueError, match="6x6"):
        apply_floor(np.eye(3), FLOOR)
    with pytest.raises(ValueError, match="position_m"):
        CovarianceFloor(position_m=-1.0)
