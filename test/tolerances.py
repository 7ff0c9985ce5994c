"""Numeric tolerance checks, and the record of how close each one came to its bound.

``check_below(name, value, bound)`` asserts a scalar error is below its bound. When the
environment names a file in ``DSAC_ROS_MARGINS``, it and every ``np.testing.assert_allclose``,
``np.allclose``, ``torch.allclose`` and scalar ``pytest.approx`` comparison (wrapped by
``install_margin_recording``, called from conftest.py) append one JSON line per check:
``{"test", "site", "ratio"}``, where ratio = error / allowed (1.0 is the bound; a passing check
is below it). ``bench/bench_tolerances.py`` runs the suite under several thread counts and BLAS
settings and reports the worst ratio of each check.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

MARGINS_ENV = "DSAC_ROS_MARGINS"


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]


TEST_DIR = os.path.dirname(os.path.abspath(__file__))


def _site(depth: int) -> str | None:
    """file:line of the caller ``depth`` frames up; None outside test/ (library code using
    np.allclose for its own checks is not a test tolerance)."""
    frame = sys._getframe(depth + 1)
    if os.path.dirname(os.path.abspath(frame.f_code.co_filename)) != TEST_DIR:
        return None
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _record(site: str | None, ratio: float) -> None:
    path = os.environ.get(MARGINS_ENV)
    if not path or site is None:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"test": _current_test(), "site": site, "ratio": float(ratio)}) + "\n")


def _as_float(value: Any) -> float:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return float(np.max(np.abs(np.asarray(value, dtype=np.float64))))


def check_below(name: str, value: Any, bound: float) -> None:
    """Assert max |value| < bound (value: number, array or tensor) and record the margin."""
    error = _as_float(value)
    _record(f"{_site(1)} {name}", error / bound)  # always called from a test
    assert error < bound, f"{name}: {error:.3g} is not below {bound:.3g}"


def _allclose_ratio(actual: Any, desired: Any, rtol: float, atol: float) -> float:
    actual = np.asarray(actual.detach().cpu().numpy() if hasattr(actual, "detach") else actual, dtype=np.float64)
    desired = np.asarray(desired.detach().cpu().numpy() if hasattr(desired, "detach") else desired, dtype=np.float64)
    actual, desired = np.broadcast_arrays(actual, desired)
    if actual.size == 0:
        return 0.0
    difference = np.abs(actual - desired)
    allowed = atol + rtol * np.abs(desired)
    same = difference == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(same, 0.0, difference / allowed)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    return float(ratio.max())


class _RecordingApprox:
    """A scalar pytest.approx that records |actual - expected| / tolerance when compared."""

    __array_ufunc__ = None  # numpy defers to __eq__ below, as it does for pytest's own approx
    __array_priority__ = 100

    def __init__(self, approx: Any, site: str) -> None:
        self._approx, self._site = approx, site

    def __eq__(self, actual: Any) -> bool:
        try:
            tolerance = float(self._approx.tolerance)
            error = abs(float(actual) - float(self._approx.expected))
            _record(self._site, 0.0 if error == 0 else (error / tolerance if tolerance > 0 else np.inf))
        except (TypeError, ValueError):
            pass
        return self._approx == actual

    def __ne__(self, actual: Any) -> bool:
        return not self.__eq__(actual)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._approx)


def install_margin_recording() -> None:
    """Wrap the comparison helpers the tests use so that each records its margin (no-op unless
    DSAC_ROS_MARGINS is set). Behaviour is unchanged: every wrapper returns or raises as before."""
    if not os.environ.get(MARGINS_ENV):
        return
    import pytest
    import torch

    real_assert_allclose, real_np_allclose = np.testing.assert_allclose, np.allclose
    real_torch_allclose, real_approx = torch.allclose, pytest.approx

    def assert_allclose(actual, desired, rtol=1e-7, atol=0, *args, **kwargs):
        _record(_site(1), _allclose_ratio(actual, desired, rtol, atol))
        return real_assert_allclose(actual, desired, rtol, atol, *args, **kwargs)

    def np_allclose(a, b, rtol=1e-5, atol=1e-8, *args, **kwargs):
        _record(_site(1), _allclose_ratio(a, b, rtol, atol))
        return real_np_allclose(a, b, rtol, atol, *args, **kwargs)

    def torch_allclose(a, b, rtol=1e-5, atol=1e-8, *args, **kwargs):
        _record(_site(1), _allclose_ratio(a, b, rtol, atol))
        return real_torch_allclose(a, b, rtol, atol, *args, **kwargs)

    def approx(expected, *args, **kwargs):
        result = real_approx(expected, *args, **kwargs)
        if not hasattr(result, "tolerance"):  # sequences and mappings: compared as pytest does
            return result
        return _RecordingApprox(result, _site(1))

    np.testing.assert_allclose, np.allclose = assert_allclose, np_allclose
    torch.allclose, pytest.approx = torch_allclose, approx


__all__ = ["MARGINS_ENV", "check_below", "install_margin_recording"]
