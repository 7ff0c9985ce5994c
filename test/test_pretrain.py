"""Encoder pretraining: training data geometry, the contrastive loss, resumable runs, encoder files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dsac_ros.geometry import invert_pose, project_points, transform_points
from dsac_ros.network import OUTPUT_STRIDE
from dsac_ros.pretrain import (PRETRAIN_SEED_BASE, EncoderFileError, PretrainConfig, contrastive_loss,
                               export_encoder, load_encoder, photometric_jitter, pretrain, render_room, sample_crop,
                               sample_pair)

# One torch thread per module (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (96, 72)  # small renders keep this file fast


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    return render_room(PRETRAIN_SEED_BASE, 4, SIZE, tmp_path_factory.mktemp("rooms"), partners=True)


def test_rooms_are_cached_and_partners_are_near_their_views(room, tmp_path):
    assert room.gray.shape == (8, SIZE[1], SIZE[0]) and room.depth_m.shape == room.gray.shape
    offsets = np.linalg.norm(room.world_T_cam[4:, :3, 3] - room.world_T_cam[:4, :3, 3], axis=1)
    assert np.all(offsets <= 0.3 + 1e-6)
    cached = render_room(PRETRAIN_SEED_BASE, 2, SIZE, tmp_path, partners=False)
    again = render_room(PRETRAIN_SEED_BASE, 2, SIZE, tmp_path, partners=False)
    np.testing.assert_array_equal(cached.gray, again.gray)
    assert len(list(tmp_path.glob("room_*.npz"))) == 1


@pytest.mark.parametrize("scale", [(0.8, 0.8), (1.0, 1.0), (1.3, 1.3)])
def test_crop_targets_project_onto_their_cells(room, scale):
    rng = np.random.default_rng(3)
    image, coords = sample_crop(room, 1, (64, 48), scale, rng)
    assert image.shape == (48, 64) and coords.shape == (6, 8, 3)
    valid = np.isfinite(coords).all(axis=2)
    assert valid.mean() > 0.9
    # Project back into the original render: consecutive cells must be 8 px / scale apart there.
    pixels = project_points(transform_points(invert_pose(room.world_T_cam[1].astype(np.float64)),
                                             coords.reshape(-1, 3)), room.intrinsics.K).reshape(6, 8, 2)
    spacing = np.diff(pixels[..., 0], axis=1)[valid[:, 1:] & valid[:, :-1]]
    np.testing.assert_allclose(np.median(spacing), OUTPUT_STRIDE / scale[0], rtol=0.05)


def test_pair_correspondences_land_on_the_same_surface(room):
    rng = np.random.default_rng(0)
    pair = None
    while pair is None:
        pair = sample_pair(room, rng, min_matched=4)
    image_a, image_b, cells_xy, matched = pair
    assert image_a.shape == image_b.shape == (SIZE[1], SIZE[0])
    assert matched.sum() >= 4
    inside = (cells_xy[matched] >= -0.5).all(axis=1)
    assert inside.all()  # matched cells land inside view b (cell units, centre of cell 0 at 0)


def test_contrastive_loss_rewards_matching_features():
    torch.manual_seed(0)
    features = torch.randn(16, 6, 8)
    identity = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(6.0), indexing="xy"), -1).reshape(-1, 2)
    matched = torch.ones(48, dtype=torch.bool)
    same = contrastive_loss(features, features, identity, matched, 0.07)
    unrelated = contrastive_loss(features, torch.randn(16, 6, 8), identity, matched, 0.07)
    assert float(same) < 0.5 and float(unrelated) > 2.0


def test_the_exposure_gain_scales_the_light_first_and_draws_nothing_when_off():
    """exposure_gain multiplies the light before the rest of the jitter and saturates at white as a
    sensor does; the range (1, 1) draws no number, so runs made before it keep their stream."""
    gray = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (8, 1))
    off, default = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(photometric_jitter(gray, off, (1.0, 1.0)), photometric_jitter(gray, default))
    assert off.random() == default.random()

    dark = gray // 2
    gained = photometric_jitter(dark, np.random.default_rng(5), (2.0, 2.0))
    expected_rng = np.random.default_rng(5)
    assert expected_rng.uniform(2.0, 2.0) == 2.0  # the gain's draw, then the same jitter as before
    expected = photometric_jitter((dark.astype(np.int32) * 2).clip(0, 255).astype(np.uint8), expected_rng)
    assert np.allclose(gained, expected, atol=1e-5)

    config = PretrainConfig(exposure_gain=(0.6, 1.4))
    assert PretrainConfig.from_dict(config.to_dict()).exposure_gain == (0.6, 1.4)
    older = config.to_dict()
    del older["exposure_gain"]  # a checkpoint from before the option resumes without a gain
    assert PretrainConfig.from_dict(older).exposure_gain == (1.0, 1.0)


def test_pretraining_resumes_and_exports_a_checked_encoder(tmp_path):
    config = PretrainConfig(scenes=2, views_per_scene=3, render_size=SIZE, crop_size=(64, 48),
                            scale_range=(0.9, 1.1), images_per_step=2, objective="both",
                            encoder={"channels": [4, 8, 8, 16], "residual_blocks": 1, "feature_channels": 16},
                            head_width=16, warmup_steps=2)
    checkpoint = pretrain(tmp_path / "run", config, hours=1.0, max_steps=3, log=lambda _: None)
    first = torch.load(checkpoint, weights_only=True)
    assert first["step"] == 3
    pretrain(tmp_path / "run", PretrainConfig(), hours=1.0, max_steps=5, log=lambda _: None)
    resumed = torch.load(checkpoint, weights_only=True)
    assert resumed["step"] == 5 and resumed["config"]["scenes"] == 2  # resumed with its own config
    assert (tmp_path / "run" / "log.jsonl").exists()

    meta = export_encoder(checkpoint, tmp_path / "encoder.pt", command="test")
    encoder, loaded_meta = load_encoder(tmp_path / "encoder.pt")
    assert loaded_meta["weights_sha256"] == meta["weights_sha256"]
    assert loaded_meta["training"]["steps"] == 5 and loaded_meta["training"]["command"] == "test"
    assert encoder(torch.zeros(1, 1, 48, 64)).shape == (1, 16, 6, 8)

    payload = torch.load(tmp_path / "encoder.pt", weights_only=True)
    first_key = sorted(payload["state_dict"])[0]
    payload["state_dict"][first_key] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(EncoderFileError, match="SHA-256"):
        load_encoder(tmp_path / "tampered.pt")
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(EncoderFileError, match="newer"):
        load_encoder(tmp_path / "newer.pt")
    continued = pretrain(tmp_path / "continued", config, hours=1.0, max_steps=6, log=lambda _: None,
                         init_encoder=tmp_path / "encoder.pt")
    assert torch.load(continued, weights_only=True)["step"] == 6  # 5 carried over + 1 new step
    history = export_encoder(continued, tmp_path / "continued.pt", command="again")["training"]
    assert history["continued_from"]["command"] == "test" and history["continued_from"]["steps"] == 5
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(EncoderFileError, match="damaged"):
        load_encoder(tmp_path / "junk.pt")
    with pytest.raises(EncoderFileError, match="does not exist"):
        load_encoder(tmp_path / "missing.pt")


def test_shipped_encoder_loads_and_matches_its_recorded_checksum():
    from dsac_ros.encoder_file import DEFAULT_ENCODER_PATH
    from dsac_ros.network import network_config

    encoder, meta = load_encoder(DEFAULT_ENCODER_PATH)  # recomputes the weights' SHA-256
    assert meta["encoder_config"] == network_config("fast")["encoder"]  # what `map` builds by default
    training = meta["training"]
    assert training["steps"] > 0 and len(training["commit"]) == 40 and "pretrain-encoder" in training["command"]
    assert training["config"]["scenes"] > 0  # procedural rooms PRETRAIN_SEED_BASE + i, never a standard scene
    assert encoder(torch.zeros(1, 1, 240, 320)).shape == (1, meta["encoder_config"]["feature_channels"], 30, 40)


def test_the_cli_trains_the_encoder_shape_it_is_given_and_refuses_bad_widths(tmp_path):
    from dsac_ros.cli import main

    out = tmp_path / "run"
    common = ["pretrain-encoder", "--out", str(out), "--scenes", "1", "--views", "2", "--objective", "contrastive",
              "--hours", "1"]
    assert main(common + ["--encoder-channels", "4", "8", "8", "16", "--encoder-blocks", "0", "--steps", "1",
                          "--export", str(tmp_path / "encoder.pt")]) == 0
    encoder, meta = load_encoder(tmp_path / "encoder.pt")
    assert meta["encoder_config"] == {"channels": [4, 8, 8, 16], "residual_blocks": 0, "feature_channels": 128}
    assert meta["training"]["steps"] == 1
    assert len(encoder.blocks) == 0
    for bad in (["--encoder-channels", "0", "8", "8", "16"], ["--encoder-blocks", "-1"]):
        with pytest.raises(SystemExit, match="needs"):
            main(["pretrain-encoder", "--out", str(tmp_path / "bad"), *bad])


def test_the_lean_encoder_loads_with_its_shape_and_recipe():
    from dsac_ros.encoder_file import DEFAULT_ENCODER_PATH

    path = DEFAULT_ENCODER_PATH.with_name("encoder_lean.pt")
    encoder, meta = load_encoder(path)  # recomputes the weights' SHA-256
    assert meta["encoder_config"] == {"channels": [8, 16, 32, 64], "residual_blocks": 2, "feature_channels": 128}
    shipped = load_encoder(DEFAULT_ENCODER_PATH)[1]["training"]
    training = meta["training"]
    # The shipped recipe (objective, rooms, steps), only the widths changed.
    assert training["steps"] == shipped["steps"] and "--encoder-channels 8 16 32 64" in training["command"]
    for key in ("objective", "scenes", "views_per_scene", "crop_size", "encoder_lr", "seed"):
        assert training["config"][key] == shipped["config"][key], key
    assert meta["normalization"] == load_encoder(DEFAULT_ENCODER_PATH)[1]["normalization"]
    assert encoder(torch.zeros(1, 1, 240, 320)).shape == (1, 128, 30, 40)


def test_the_transfer_benchmark_runs_encoders_side_by_side_on_the_same_unseen_rooms(tmp_path):
    import argparse
    import json

    from dsac_ros.cli import bench as bench_cli

    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    out = tmp_path / "transfer.json"
    common = ["transfer", "--rooms", "1", "--mapping-views", "12", "--test-views", "4", "--threads", "1"]
    assert bench_cli.run(parser.parse_args(common + ["--modes", "rgbd", "--out", str(out)])) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["mode"], r["encoder"], r["widths"]) for r in rows] == [
        ("rgbd", "shipped", "16-32-64-128x2"), ("rgbd", "lean", "8-16-32-64x2")]
    assert result["seeds"] == [900_000]  # HELDOUT_SEED_BASE: a room no encoder was trained on
    # The same room and test views for each encoder: only the encoder differs between rows.
    assert rows[0]["rooms"][0]["frames"] == rows[1]["rooms"][0]["frames"] > 0
    for row in rows:
        assert 0.0 <= row["pct_2cm_2deg"] <= row["pct_5cm_5deg"] <= 100.0
        assert np.isfinite(row["median_translation_cm"])
    for bad, reason in ((["--encoders", str(tmp_path / "missing.pt")], "no encoder file"),
                        (["--modes", "full"], "unknown mode")):
        with pytest.raises(SystemExit, match=reason):
            bench_cli.run(parser.parse_args(common + bad + ["--out", str(tmp_path / "bad.json")]))
    assert not (tmp_path / "bad.json").exists()


def test_encoders_are_named_by_the_package_and_an_existing_file_wins(tmp_path, monkeypatch):
    from dsac_ros.encoder_file import DEFAULT_ENCODER_PATH, encoder_path_of, load_mapping_encoder

    assert encoder_path_of("lean") == DEFAULT_ENCODER_PATH.with_name("encoder_lean.pt")
    assert encoder_path_of("shipped") == DEFAULT_ENCODER_PATH
    _, config, info = load_mapping_encoder("lean")  # `dsac-ros map --encoder lean`
    assert config["channels"] == [8, 16, 32, 64] and info["encoder"].endswith("encoder_lean.pt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lean").write_bytes(b"not an encoder")
    assert encoder_path_of("lean") == Path("lean")  # a user's own file of that name is taken as given
    with pytest.raises(EncoderFileError):
        load_mapping_encoder("lean")
