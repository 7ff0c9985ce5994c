"""Mapping pipeline: exact pixel bookkeeping under augmentation, buffer coverage, training stages,
resumable runs, full mode and the ``map`` verb, on the tiny scene (seconds each)."""

import copy
import dataclasses
import warnings

import cv2
import numpy as np
import pytest
import torch

from dsac_ros.data.scenes import get_scene
from dsac_ros.dsac import RansacOptions
from dsac_ros.geometry import transform_points
from dsac_ros.head_training import coords_loss, head_forward_flat
from dsac_ros.mapfile import load_map
from dsac_ros.network import Head, cell_centers_px, network_input_size
from dsac_ros import mapping as mp
from tolerances import check_below

# One torch thread per module (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

INPUT_HEIGHT_PX = 96  # tiny frames are 160 x 120; a small input keeps every test in seconds


def e2e_ransac(hypotheses: int) -> RansacOptions:
    return dataclasses.replace(mp.MappingOptions().e2e_ransac, hypotheses=hypotheses)


def tiny_options(**changes) -> mp.MappingOptions:
    base = dict(mode="rgbd", network="fast", minutes=1.0, input_height_px=INPUT_HEIGHT_PX, progress=False, device="cpu",
                batch_size=1024, validate_every_s=1e9, checkpoint_every_s=1e9,
                augmentation=mp.AugmentationOptions(passes=2))
    base.update(changes)
    return mp.MappingOptions(**base)


@pytest.fixture(scope="session")
def tiny_frames():
    return list(get_scene("tiny").render_frames("mapping"))


@pytest.fixture(scope="session")
def random_encoder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        encoder, _, description = mp.load_mapping_encoder(None, log=lambda message: None)
    return encoder, description["encoder"].startswith("random")


@pytest.fixture(scope="session")
def tiny_buffer(tiny_frames, random_encoder):
    encoder, is_random = random_encoder
    options = tiny_options(augmentation=mp.AugmentationOptions(passes=2))
    timer = mp.StageTimer()
    mapping, validation, info = mp.split_frames(tiny_frames, options, timer)
    if is_random:  # as map_recording does for the random fallback
        views = [mp.make_view(mapping.gray[i], mapping.image_sizes[i], None, options.augmentation).tensor
                 for i in range(0, len(mapping), 3)]
        mp.calibrate_random_encoder(encoder, torch.cat(views))
    data = mp.build_buffer(mapping, validation, encoder, options, torch.device("cpu"), timer, use_depth=True)
    return data, mapping, validation, info


def test_augmented_cells_map_back_to_exact_original_pixels():
    # Linear ramps survive area resizing and bilinear warping exactly, so the value a view shows
    # at a cell centre must equal the original pixel coordinate the bookkeeping maps it back to.
    image_size = (160, 120)
    input_size = network_input_size(*image_size, INPUT_HEIGHT_PX)
    u, v = np.meshgrid(np.arange(image_size[0], dtype=np.float32), np.arange(image_size[1], dtype=np.float32))
    options = tiny_options(augmentation=mp.AugmentationOptions(brightness=0.0, contrast=0.0, max_rotation_deg=15.0))
    checked = 0
    for seed in range(4):
        views = []
        for ramp in (u, v):
            resized = cv2.resize(ramp, input_size, interpolation=cv2.INTER_AREA)
            views.append(mp.make_view(resized, image_size, np.random.default_rng(seed), options.augmentation))
        pixels = views[0].pixels_xy
        np.testing.assert_array_equal(pixels, views[1].pixels_xy)
        assert pixels.shape[0] == views[0].tensor.shape[2] * views[0].tensor.shape[3] // 64
        height, width = views[0].tensor.shape[2:]
        cells_u = (8 * np.arange(width // 8) + 4)
        cells_v = (8 * np.arange(height // 8) + 4)
        grid_u, grid_v = np.meshgrid(cells_u, cells_v)
        # Away from the image border (where resizing clamps) and the rotated-in fill.
        interior = ((pixels[:, 0] > 3) & (pixels[:, 0] < image_size[0] - 4)
                    & (pixels[:, 1] > 3) & (pixels[:, 1] < image_size[1] - 4))
        assert interior.sum() > 50
        for axis, view in enumerate(views):
            shown = (view.tensor[0, 0].numpy()[grid_v.ravel(), grid_u.ravel()] * 0.25 + 0.4) * 255.0
            # OpenCV's bilinear warp weights are fixed point (1/32 px): 0.1 px here; a half-pixel slip
            # in the bookkeeping would show as 0.5 px.
            np.testing.assert_allclose(shown[interior], pixels[interior, axis], atol=0.1)
        assert not views[0].inside.all() or seed == 0  # rotations push corner cells outside
        checked += int(interior.sum())
    assert checked > 200


def test_plain_view_uses_the_localizer_cell_centres():
    image_size = (640, 480)
    input_size = network_input_size(*image_size, 240)
    gray = np.zeros((input_size[1], input_size[0]), np.uint8)
    view = mp.make_view(gray, image_size, None, tiny_options(input_height_px=240).augmentation)
    expected = cell_centers_px(input_size[0] // 8, input_size[1] // 8, input_size, image_size)
    np.testing.assert_allclose(view.pixels_xy, expected, atol=1e-9)
    assert view.inside.all()


def test_buffer_targets_reproject_onto_their_pixels(tiny_buffer):
    # Targets come from depth at the mapped-back pixel: projecting them with the frame's pose and
    # (original) intrinsics must land on that pixel, for plain and augmented views alike.
    data = tiny_buffer[0]
    buffer = data.buffer
    has = buffer.has_depth()
    views = buffer.frame_index.long()
    for pass_index in (0, 1):
        rows = torch.nonzero(has & torch.as_tensor(data.view_pass[views.numpy()] == pass_index)).squeeze(1)
        rows = rows[:: max(1, len(rows) // 2000)]
        coords = buffer.coords_world_m[rows].double().numpy()
        projected = []
        for row, point in zip(rows.numpy(), coords):
            view = views[row]
            cam = transform_points(buffer.cam_T_world[view].double().numpy(), point[None])[0]
            K = buffer.intrinsics_K[view].double().numpy()
            projected.append((K @ (cam / cam[2]))[:2])
        error = np.linalg.norm(np.array(projected) - buffer.pixels_xy[rows].double().numpy(), axis=1)
        check_below("np.max(error)", np.max(error), 1e-3)


def test_buffer_and_samplers_cover_all_mapping_frames(tiny_buffer, tiny_frames):
    data, mapping, validation, info = tiny_buffer
    assert info["frames_read"] == len(tiny_frames) == len(mapping) + len(validation)
    assert len(validation) >= 1 and not set(validation.indices) & set(mapping.indices)
    assert data.mapping_frames == len(mapping)
    for pass_index in range(2):
        assert sorted(data.view_frame[data.view_pass == pass_index]) == list(range(len(mapping)))
    # Every view owns rows, and the row ranges tile the buffer.
    assert (data.view_rows[:, 1] > data.view_rows[:, 0]).all()
    assert data.view_rows[0, 0] == 0 and data.view_rows[-1, 1] == len(data.buffer)
    assert (data.view_rows[1:, 0] == data.view_rows[:-1, 1]).all()
    # One epoch of the view sampler visits every view once; of the row sampler, every row once.
    views = mp.EpochSampler(len(data.view_rows), seed=3)
    first = views.next(len(data.view_rows)).numpy()
    assert sorted(first) == list(range(len(data.view_rows)))
    assert set(data.view_frame[first]) == set(range(len(mapping)))
    rows = mp.EpochSampler(len(data.buffer), seed=4)
    seen = torch.cat([rows.next(1000) for _ in range(len(data.buffer) // 1000 + 1)])[:len(data.buffer)]
    assert torch.equal(torch.sort(seen).values, torch.arange(len(data.buffer)))
    assert set(data.buffer.frame_index[seen].numpy()) == set(range(len(data.view_rows)))


def test_epoch_sampler_resumes_where_it_stopped():
    a = mp.EpochSampler(10, seed=1)
    a.next(7)
    b = mp.EpochSampler(10, seed=1, **a.state())
    assert torch.equal(a.next(15), b.next(15))


def test_an_end_to_end_step_descends_the_expected_loss_of_its_view(tiny_buffer):
    """The end-to-end stage's step (expected DSAC loss, backward, clipped update) lowers that loss.

    One small step, not a training run: over many Adam steps this tiny problem's expected loss
    jumps with every change of a hypothesis' inlier set, so whether 16 steps end lower depended on
    the CPU's summation order (it rose 2.69 -> 4.03 with torch's non-AVX2 kernels). A step of at most
    1e-4 (SGD on the gradient clipped to norm 1) changes no discrete choice, so the loss follows its
    gradient: measured 2.5-8 % lower on both kernel paths, against rounding of about 1e-6.
    """
    data = tiny_buffer[0]
    options = tiny_options()
    views = [int(np.flatnonzero(data.view_pass == 0)[i]) for i in (0, 6)]
    rows = torch.cat([torch.arange(*data.view_rows[v]) for v in views])
    center = torch.as_tensor(data.scene_center_m, dtype=torch.float32).view(1, 3)
    torch.manual_seed(0)
    head = Head(data.buffer.features.shape[1], 128, 1)
    optimizer = torch.optim.Adam(head.parameters(), 1e-3)
    features, targets = data.buffer.features[rows].float(), data.buffer.coords_world_m[rows]
    for _ in range(300):  # a good initialisation first, as DSAC* requires
        loss = coords_loss(head_forward_flat(head, features) + center, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ransac = RansacOptions(hypotheses=64)
    cpu = torch.device("cpu")

    def expected(model, view) -> float:
        torch.manual_seed(0)  # the same hypotheses before and after the step
        with torch.no_grad():
            value, details = mp.view_expected_loss(model, data, view, center, ransac, options, cpu,
                                                   torch.Generator().manual_seed(0))
        assert not details["reason"]
        return float(value)

    for view in views:
        before = expected(head, view)
        stepped = copy.deepcopy(head)
        torch.manual_seed(0)
        assert mp.end_to_end_step(stepped, data, view, center, torch.optim.SGD(stepped.parameters(), lr=1e-4), ransac,
                                  options, cpu, torch.Generator().manual_seed(0)) == pytest.approx(before, rel=1e-6)
        after = expected(stepped, view)
        # A decrease 100 times the rounding, 25 times below the smallest measured one.
        assert after < before * (1 - 1e-4), (view, before, after)


@pytest.fixture(scope="session")
def tiny_map(tiny_frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("map") / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = mp.map_recording(tiny_frames, out, tiny_options(max_steps=400, max_e2e_steps=4, e2e_ransac=e2e_ransac(32)),
                                  log=lambda message: None)
    return result


def test_tiny_scene_maps_in_seconds_and_its_loss_falls(tiny_map):
    training = tiny_map.training
    head = training["stages"]["head"]
    assert head["steps"] == 400
    losses = head["early_loss"], head["late_loss"]
    assert losses[1] < 0.6 * losses[0], losses
    assert training["stages"]["end_to_end"]["steps"] == 4
    scene_map = load_map(tiny_map.path)
    assert scene_map.input_height_px == INPUT_HEIGHT_PX
    assert scene_map.training["mode"] == "rgbd" and scene_map.training["end_to_end"] is True
    assert scene_map.training["data"]["mapping_frames"] + scene_map.training["data"]["validation_frames"] == 24
    assert {"read", "encoder", "head_steps", "e2e_steps"} <= set(scene_map.training["timings_s"])
    assert scene_map.training["encoder"].startswith("random") or scene_map.training["encoder_sha256"]
    # The saved network reproduces the head's training: coordinates of plain mapping views are
    # far closer to the truth than at the start.
    from dsac_ros.buffer import cell_targets
    from dsac_ros.network import to_gray_resized

    medians = []
    for index, frame in enumerate(get_scene("tiny").render_frames("mapping")):
        if index % 3:
            continue
        gray = to_gray_resized(frame.image_rgb, network_input_size(160, 120, INPUT_HEIGHT_PX))
        view = mp.make_view(gray, (160, 120), None, tiny_options().augmentation)
        with torch.no_grad():
            coords = scene_map.network(view.tensor)[0].reshape(3, -1).T.double().numpy()
        truth = cell_targets(frame.depth_m, frame.world_T_cam, frame.intrinsics, view.pixels_xy)
        valid = np.isfinite(truth).all(axis=1)
        medians.append(np.median(np.linalg.norm(coords[valid] - truth[valid], axis=1)))
    assert np.mean(medians) < 0.6 * losses[0], (medians, losses)


def test_interrupted_run_resumes_from_its_checkpoint(tiny_frames, tmp_path, monkeypatch):
    out = tmp_path / "resumed.pt"
    options = tiny_options(max_steps=40, max_e2e_steps=3, e2e_ransac=e2e_ransac(16),
                           augmentation=mp.AugmentationOptions(passes=1))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        monkeypatch.setattr("dsac_ros.mapping.run.end_to_end_stage", interrupted)  # where the run looks it up
        with pytest.raises(KeyboardInterrupt):
            mp.map_recording(tiny_frames, out, options, log=lambda message: None)
        assert not out.exists()
        saved = mp.Checkpoints(out).load_state()
        assert saved.stage == mp.Stage.E2E and saved.stage_state(mp.Stage.HEAD)["step"] == 40
        monkeypatch.undo()
        # Resuming reads no frames: the buffer comes from the checkpoint.
        result = mp.map_recording(iter(()), out, dataclasses.replace(options, max_e2e_steps=2), resume=True,
                                  log=lambda message: None)
    assert result.training["stages"]["head"]["steps"] == 40
    assert result.training["stages"]["end_to_end"]["steps"] == 2
    assert load_map(out).training["data"]["mapping_frames"] == saved.data_info["mapping_frames"]
    # The map holds the encoder the buffer was made with (a calibrated random one is not a fresh one).
    assert torch.equal(load_map(out).network.encoder.project.weight, saved.encoder["project.weight"])
    assert not mp.Checkpoints(out).directory.exists()


def test_a_checkpoint_of_another_format_version_is_refused_with_the_remedy(tiny_frames, tmp_path):
    out = tmp_path / "old.pt"
    checkpoints = mp.Checkpoints(out)
    checkpoints.directory.mkdir()
    # What format 1 wrote: a plain dict with <stage>_state keys.
    torch.save({"stage": "e2e", "head_state": {"step": 3}, "e2e_state": None, "version": 1, "options": {},
                "spent_s": 1.0}, checkpoints.state_path)
    with pytest.raises(mp.CheckpointError, match="format version 1.*without --resume"):
        mp.map_recording(tiny_frames, out, tiny_options(), resume=True, log=lambda message: None)
    assert isinstance(mp.CheckpointError("x"), mp.MappingError)  # the CLI reports it like any mapping error


def test_full_mode_trains_the_whole_network_and_its_loss_falls(tiny_frames, tmp_path):
    options = tiny_options(mode="full", network="fast", max_steps=150, max_e2e_steps=3, full_lr=2e-3,
                           e2e_ransac=e2e_ransac(16),
                           augmentation=mp.AugmentationOptions(scale_range=(0.9, 1.1), max_rotation_deg=5.0))
    # Four frames: whole-image training from scratch must at least fit a few views in 150 steps.
    result = mp.map_recording(tiny_frames[:4], tmp_path / "full.pt", options, log=lambda message: None)
    stage = result.training["stages"]["full"]
    assert stage["steps"] == 150
    assert stage["late_loss"] < 0.7 * stage["first_loss"], stage  # first: predictions at the scene centre
    assert result.training["stages"]["full_end_to_end"]["steps"] == 3
    scene_map = load_map(tmp_path / "full.pt")
    assert scene_map.network_config["name"] == "fast"
    # Both encoder and head were trained: the encoder differs from a fresh one with the same seed.
    from dsac_ros.network import build_network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        fresh = build_network("fast")
    assert not torch.equal(fresh.encoder.project.weight, scene_map.network.encoder.project.weight)


def test_the_covariance_consistency_on_the_tiny_scene_falls_in_its_band(tiny_map, tiny_frames):
    """The published covariance of a freshly mapped tiny scene, scored on its mapping frames: the
    normalised estimation error squared (6 if honest). The tiny scene has too few held-out frames
    to calibrate (MIN_CALIBRATION_FRAMES), so this is the raw inlier covariance with the floor.
    400 head steps leave this map's NEES sensitive to the training's last float digits: measured
    over mapping seeds 0-3 at 1 and 2 torch threads, medians 6.9-30.0 and 16.7-75.0 % inside the
    95 % ellipsoid (a full-suite run once landed outside the earlier band of 30 and 25 %). The band
    still catches what the calibration exists for, a covariance 30 times too confident (small_room
    measured 208 before calibration, about 0 % inside), and a covariance that says nothing
    (median below 1)."""
    from dsac_ros.evaluation import covariance_consistency, evaluate_frames
    from dsac_ros.localizer import Localizer

    records = evaluate_frames(Localizer(tiny_map.path, device="cpu"), tiny_frames, use_depth=True, progress=False)
    consistency = covariance_consistency(records)
    assert consistency["covariance_frames"] >= 18, consistency
    assert 1.0 < consistency["nees_median"] < 80.0, consistency
    assert consistency["pct_inside_95_ellipsoid"] >= 8.0, consistency


def test_per_image_normalisation_cancels_an_exposure_change(tiny_frames, tmp_path):
    """input_normalization="per_image" (each image standardised by its own mean and std) and
    "per_image_gain" (each image scaled to the fixed mean), at mapping and (the map stores it) at
    localisation: a gain on the image changes nothing but uint8 rounding and clipping."""
    from dsac_ros.localizer import Localizer
    from dsac_ros.network import normalize_unit_gray

    gray = torch.rand(1, 1, 30, 40) * 0.6 + 0.1
    per_image = {"mean": 0.4, "std": 0.25, "per_image": True}
    assert torch.allclose(normalize_unit_gray(gray * 1.4, per_image), normalize_unit_gray(gray, per_image), atol=1e-5)
    assert not torch.allclose(normalize_unit_gray(gray * 1.4), normalize_unit_gray(gray), atol=1e-2)
    # per_image_gain cancels the gain too, but keeps each image's contrast: the fixed normalisation
    # of the image scaled to the fixed mean (0.4), so a flatter image stays flatter.
    gain = {"mean": 0.4, "std": 0.25, "per_image_gain": True}
    assert torch.allclose(normalize_unit_gray(gray * 1.4, gain), normalize_unit_gray(gray, gain), atol=1e-5)
    scaled = gray * (0.4 / gray.mean())
    assert torch.allclose(normalize_unit_gray(gray, gain), (scaled - 0.4) / 0.25, atol=1e-5)
    flatter = 0.5 * gray + 0.5 * gray.mean()
    assert float(normalize_unit_gray(flatter, gain).std()) < 0.6 * float(normalize_unit_gray(gray, gain).std())
    assert torch.allclose(normalize_unit_gray(flatter, per_image).std(), normalize_unit_gray(gray, per_image).std())

    # Scene coordinates of the tiny scene's frames and of the same frames 20 % darker, from a map
    # of each kind: measured median shifts 25 cm (fixed), 1.8 cm (per_image) and 2.0 cm
    # (per_image_gain), the rest being uint8 rounding of the darker 160 x 120 images.
    shifts = {}
    for normalization in ("fixed", "per_image", "per_image_gain"):
        out = tmp_path / f"{normalization}.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mp.map_recording(tiny_frames, out, tiny_options(max_steps=200, max_e2e_steps=0,
                                                            input_normalization=normalization), log=lambda message: None)
        localizer = Localizer(out, device="cpu")
        assert bool(localizer.map.normalization.get(normalization)) == (normalization != "fixed")
        medians = []
        for frame in tiny_frames[::4]:
            darker = np.clip(frame.image_rgb.astype(np.float32) * 0.8 + 0.5, 0, 255).astype(np.uint8)
            plain, dimmed = localizer.predict(frame.image_rgb)[0], localizer.predict(darker)[0]
            medians.append(float(torch.linalg.norm(plain - dimmed, dim=1).median()))
        shifts[normalization] = float(np.mean(medians))
    assert shifts["per_image"] < 0.05 and shifts["per_image_gain"] < 0.05 and shifts["fixed"] > 0.10, shifts
    with pytest.raises(mp.MappingError, match="input_normalization must be one of"):
        tiny_options(input_normalization="mean_only")


def test_auto_input_normalisation_follows_the_head():
    """The default, "auto": one gain per image (per_image_gain) for scene-memory maps, rgbd and rgb
    alike (it cancels exposure changes and costs clean frames little, bench cameras), the fixed
    mean / std for MLP heads and full mode, where it was not measured; an explicit choice is kept."""
    for mode in ("rgbd", "rgb"):
        options = mp.MappingOptions(mode=mode)
        assert options.input_normalization == "auto" and options.resolved_input_normalization == "per_image_gain"
        assert options.normalization.get("per_image_gain") is True and "per_image" not in options.normalization
    for options in (mp.MappingOptions(mode="full"), mp.MappingOptions(mode="rgbd", network="fast")):
        assert options.resolved_input_normalization == "fixed"
        assert not {"per_image", "per_image_gain"} & set(options.normalization)
    assert mp.MappingOptions(mode="rgbd", input_normalization="fixed").resolved_input_normalization == "fixed"
    assert mp.MappingOptions(mode="rgb", input_normalization="per_image").normalization["per_image"] is True


def test_rgbd_mode_without_depth_is_refused_with_a_reason(tiny_frames, tmp_path):
    no_depth = [dataclasses.replace(frame, depth_m=None) for frame in tiny_frames]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(mp.MappingError, match="depth"):
            mp.map_recording(no_depth, tmp_path / "x.pt", tiny_options(), log=lambda message: None)
        no_pose = [dataclasses.replace(frame, world_T_cam=None) for frame in tiny_frames]
        with pytest.raises(mp.MappingError, match="pose"):
            mp.map_recording(no_pose, tmp_path / "x.pt", tiny_options(), log=lambda message: None)


def test_budget_split_between_stages():
    options = tiny_options(minutes=10.0)
    budget = mp.split_budget(600.0, 60.0, options)
    assert budget.reserve_s == pytest.approx(18.0)
    assert budget.head_s == pytest.approx(0.8 * (600 - 60 - 18))
    assert budget.head_s + budget.e2e_s + budget.reserve_s + 60.0 == pytest.approx(600.0)
    alone = mp.split_budget(600.0, 60.0, dataclasses.replace(options, end_to_end=False))
    assert alone.e2e_s == 0.0 and alone.head_s == pytest.approx(600 - 60 - 18)


def test_map_verb_writes_a_loadable_map(tiny_frames, tmp_path, capsys):
    from dsac_ros.cli import main
    from dsac_ros.data import write_folder

    folder = tmp_path / "rec"
    write_folder(tiny_frames[:12], folder)
    out = tmp_path / "verb.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        code = main(["map", str(folder), "--out", str(out), "--minutes", "0.1", "--mode", "rgb", "--no-end-to-end",
                     "--input-height", str(INPUT_HEIGHT_PX), "--passes", "1", "--quiet", "--device", "cpu"])
    assert code == 0
    scene_map = load_map(out)
    assert scene_map.training["mode"] == "rgb" and scene_map.training["end_to_end"] is False
    printed = capsys.readouterr().out
    assert "time per part" in printed
    # The size line: the file's megabytes and the part that dominates them.
    size_line = next(line for line in printed.splitlines() if line.startswith("map size:"))
    assert f"{out.stat().st_size / 1e6:.2f} MB, dominated by encoder" in size_line and "keys" in size_line
    assert main(["map", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
