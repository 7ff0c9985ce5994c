"""Encoder backends (dsac_ros.inference): each gives the reference's scene coordinates and pose;
an unavailable backend is refused with its reason; auto falls back to torch and says so."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dsac_ros.data.scenes import get_scene
from dsac_ros.dsac import RansacOptions
from dsac_ros.geometry import pose_errors
from dsac_ros.inference import BackendError, export_encoder_onnx, make_encoder_runner
from dsac_ros.localizer import Localizer
from dsac_ros.mapfile import load_map
from dsac_ros.memory_head import nearest_keys
from dsac_ros.network import build_network
from fixtures_maps import FIT_STRIDE, build_tiny_map

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEMORY_MAP = Path(__file__).parent / "fixtures" / "tiny_memory_map_fb52886.pt"
TINY_RANSAC = RansacOptions(inlier_threshold_px=4.0)


@pytest.fixture(scope="module")
def map_path(cache_dir):
    return build_tiny_map(cache_dir)


@pytest.fixture(scope="module")
def fitted_frames():
    return list(get_scene("tiny").render_frames("mapping"))[::FIT_STRIDE][:4]


def test_onnxruntime_features_equal_eager_within_float_rounding():
    """The same convolutions summed in another order: measured 8.8e-7 mean relative difference on
    small_room; 1e-4 of the feature range leaves two orders of margin for any x86-64 kernel."""
    encoder = build_network("fast").encoder.eval()
    image = torch.randn(1, 1, 120, 160, generator=torch.Generator().manual_seed(3))
    reference = make_encoder_runner(encoder, "torch")(image)
    runner = make_encoder_runner(encoder, "onnxruntime")
    assert runner.name == "onnxruntime" and runner.note == ""
    features = runner(image)
    assert features.shape == reference.shape == (1, 128, 15, 20)
    assert float((features - reference).abs().max()) < 1e-4 * float(reference.abs().max())
    # Height and width are dynamic in the export: another size runs without a new export.
    assert runner(torch.zeros(1, 1, 64, 48)).shape == (1, 128, 8, 6)


def test_memory_map_coordinates_agree_across_backends():
    """An exact nearest-key lookup: float-rounding differences in the features can only flip a
    near-tie to another key (allowed: 2 % of cells, as across BLAS libraries)."""
    frame = next(iter(get_scene("tiny").render_frames("test")))
    coords = {backend: Localizer(load_map(MEMORY_MAP), device="cpu", backend=backend).predict(frame.image_rgb)[0]
              for backend in ("torch", "onnxruntime")}
    moved = float(((coords["torch"] - coords["onnxruntime"]).norm(dim=1) > 1e-4).float().mean())
    assert moved <= 0.02, moved


def test_each_backend_gives_the_same_pose_on_a_fixed_frame(map_path, fitted_frames):
    results = {}
    for backend in ("torch", "onnxruntime", "auto"):
        localizer = Localizer(map_path, device="cpu", ransac=TINY_RANSAC, backend=backend)
        frame = fitted_frames[1]
        results[backend] = localizer.localize(frame.image_rgb, frame.intrinsics, seed=5)
        assert results[backend].success, results[backend].reason
        assert results[backend].backend == localizer.backend
        assert {"prepare", "encoder", "lookup", "network", "ransac", "total"} <= set(results[backend].timings_ms)
    assert results["auto"].backend == "onnxruntime"  # onnxruntime is a dependency: auto takes it on the CPU
    for backend in ("onnxruntime", "auto"):
        dt_m, dr_deg = pose_errors(results[backend].world_T_cam, results["torch"].world_T_cam)
        assert dt_m < 1e-3 and dr_deg < 0.05, (backend, dt_m, dr_deg)


def test_an_unknown_backend_is_refused_with_the_choices(map_path):
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'; choose from auto, torch, onnxruntime"):
        Localizer(map_path, device="cpu", backend="tensorrt")


def test_without_onnxruntime_explicit_is_refused_and_auto_falls_back_and_says_so(map_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(BackendError, match="onnxruntime is not installed"):
        Localizer(map_path, device="cpu", backend="onnxruntime")
    with caplog.at_level(logging.WARNING, logger="dsac_ros.localizer"):
        localizer = Localizer(map_path, device="cpu", backend="auto")
    assert localizer.backend == "torch"
    assert "onnxruntime unavailable" in localizer.backend_note and "not installed" in localizer.backend_note
    assert localizer.encoder_runner.describe().startswith("torch (auto: onnxruntime unavailable")
    assert any("backend auto: onnxruntime unavailable" in record.getMessage() for record in caplog.records)


def test_a_broken_export_is_refused_not_used(monkeypatch):
    """The load-time check against eager: an export that computes something else never runs."""
    import dsac_ros.inference as inference

    encoder = build_network("fast").encoder.eval()
    other = build_network("fast").encoder.eval()
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.5)
    monkeypatch.setattr(inference, "export_encoder_onnx", lambda module: export_encoder_onnx(other))
    with pytest.raises(BackendError, match="disagrees with eager torch"):
        make_encoder_runner(encoder, "onnxruntime")
    assert make_encoder_runner(encoder, "auto", log=lambda message: None).name == "torch"


def test_the_faiss_lookup_finds_the_torch_lookups_keys():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(300, 32, generator=generator)
    keys = torch.randn(2000, 32, generator=generator)
    valid = torch.rand(2000, generator=generator) > 0.4
    bias = -0.5 * (keys * keys).sum(1)
    for mask in (None, valid):
        masked = bias if mask is None else bias.masked_fill(~mask, -float("inf"))
        reference = torch.addmm(masked, queries, keys.T).max(1).indices
        found = nearest_keys(queries, keys, mask)
        assert found.dtype == torch.long and bool((found == reference).all())
        if mask is not None:
            assert bool(mask[found].all())
    assert bool((nearest_keys(queries, keys, torch.zeros(2000, dtype=torch.bool)) == 0).all())
    assert np.array_equal(nearest_keys(keys[:5], keys).numpy(), np.arange(5))


def test_the_time_budget_ends_a_hopeless_frame_as_lost_through_the_localizer(map_path, fitted_frames):
    """A frame of noise has no pose; with a DSAC budget already spent it answers LOST with the
    budget as its reason (the node publishes that status and takes the next frame)."""
    from dsac_ros.status import Status

    frame = fitted_frames[0]
    noise = np.random.default_rng(0).integers(0, 256, frame.image_rgb.shape, dtype=np.uint8)
    localizer = Localizer(map_path, device="cpu", ransac=TINY_RANSAC)
    capped = localizer.localize(noise, frame.intrinsics, seed=1,
                                ransac=RansacOptions(inlier_threshold_px=4.0, time_budget_ms=1e-6))
    assert capped.status == Status.LOST and capped.reason == "time_budget_exceeded"
    assert capped.world_T_cam is None and capped.covariance_6x6 is None
    # The cap is per call: the next frame with the localizer's own options localises.
    good = localizer.localize(frame.image_rgb, frame.intrinsics, seed=1)
    assert good.success, good.reason
