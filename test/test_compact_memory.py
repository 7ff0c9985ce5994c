"""Compact memory maps (format 2): keyframes by covisibility, product-quantised keys, int16
coordinates, the map file's compressed section, and old (format 1) memory maps."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dsac_ros import mapping as mp
from dsac_ros.compact_memory import CompactMemoryHead, pack_state, unpack_state
from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import pose_errors
from dsac_ros.localizer import Localizer
from dsac_ros.mapfile import MAP_FORMAT_VERSION, MapFileError, load_map, map_size_report, map_to_dict
from dsac_ros.memory_head import MemoryHead
from tolerances import check_below

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INPUT_HEIGHT_PX = 96
FIXTURES = Path(__file__).parent / "fixtures"
DENSE = mp.MemoryOptions(keyframes=mp.KeyframeOptions(enabled=False), subquantizers=None)


def _map(frames, path, memory=mp.MemoryOptions(), mode="rgbd"):
    options = mp.MappingOptions(mode=mode, end_to_end=False, input_height_px=INPUT_HEIGHT_PX, progress=False,
                                device="cpu", memory=memory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return mp.map_recording(frames, path, options, log=lambda message: None)


@pytest.fixture(scope="module")
def tiny():
    scene = get_scene("tiny")
    return list(scene.render_frames("mapping")), list(scene.render_frames("test"))


@pytest.fixture(scope="module")
def tiny_maps(tiny, tmp_path_factory):
    """The tiny scene mapped densely, with quantised keys only, and with the defaults (keyframes too)."""
    frames, _ = tiny
    out = tmp_path_factory.mktemp("compact")
    return {"dense": _map(frames, out / "dense.pt", DENSE),
            "quantised": _map(frames, out / "quantised.pt", mp.MemoryOptions(keyframes=mp.KeyframeOptions(enabled=False))),
            "default": _map(frames, out / "default.pt")}


# --- keyframes ---------------------------------------------------------------------------------------


def test_a_view_seen_again_is_redundant_and_a_new_one_is_kept(tiny):
    frames, _ = tiny
    selector = mp.KeyframeSelector()
    first = frames[0]
    assert selector.consider(first.world_T_cam, first.intrinsics, first.depth_m)
    assert not selector.consider(first.world_T_cam, first.intrinsics, first.depth_m)
    turned = first.world_T_cam.copy()
    angle = np.radians(40.0)  # about the optical frame's y axis (down): the view swings sideways
    turned[:3, :3] = first.world_T_cam[:3, :3] @ np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    assert selector.consider(turned, first.intrinsics, None)  # rgb: points at the nominal depth
    assert (selector.considered, selector.kept) == (3, 2)


def test_revisiting_the_same_views_does_not_grow_the_map(tiny, tmp_path):
    frames, _ = tiny
    once = _map(frames, tmp_path / "once.pt")
    # Three passes over the same views, the later ones 5 mm off: a robot driving its loop again.
    again = []
    for shift_m in (0.0, 0.005, -0.005):
        for frame in frames:
            pose = frame.world_T_cam.copy()
            pose[:3, 3] += shift_m
            again.append(type(frame)(frame.image_rgb, frame.intrinsics, frame.stamp_ns, frame.depth_m, pose, frame.name))
    thrice = _map(again, tmp_path / "thrice.pt")
    kept_once, kept_thrice = (r.training["data"]["keyframes"]["kept"] for r in (once, thrice))
    # The first pass decides; the two revisits add at most a frame or two where validation frames moved.
    assert kept_thrice <= kept_once + 2, (kept_once, kept_thrice)
    size_once, size_thrice = (map_size_report(r.path)["file_mb"] for r in (once, thrice))
    assert size_thrice <= 1.1 * size_once, (size_once, size_thrice)


# --- quantised keys ----------------------------------------------------------------------------------


def test_quantised_lookups_agree_with_the_exact_lookup(tiny_maps, tiny):
    _, test_frames = tiny
    dense, quantised = (Localizer(tiny_maps[k].path, device="cpu") for k in ("dense", "quantised"))
    disagree, errors = [], {"dense": [], "quantised": []}
    for frame in test_frames:
        exact = dense.predict(frame.image_rgb)[0].reshape(3, -1).T
        approx = quantised.predict(frame.image_rgb)[0].reshape(3, -1).T
        disagree.append(float(((approx - exact).norm(dim=1) > 0.05).float().mean()))
    # 16-byte keys reconstruct the 128 channels with about 27 % relative error, so some cells find
    # another (nearby) key; measured here: 25 % of cells move by more than 5 cm.
    check_below("fraction of cells whose quantised lookup moved > 5 cm", float(np.mean(disagree)), 0.4)
    for name, localizer in (("dense", dense), ("quantised", quantised)):
        for index, frame in enumerate(test_frames):
            estimate = localizer.localize(frame.image_rgb, frame.intrinsics, seed=index)
            errors[name].append(pose_errors(estimate.world_T_cam, frame.world_T_cam)[0] if estimate.success else np.inf)
    # Poses: the quantised map localises the tiny 96-px test frames as well (measured median 16 vs 19 cm).
    assert np.median(errors["quantised"]) < 2.0 * np.median(errors["dense"]) + 0.02, errors


def test_compact_maps_are_small_and_keep_the_coordinates(tiny_maps):
    dense, quantised = tiny_maps["dense"], tiny_maps["quantised"]
    dense_head, head = dense.network.head, quantised.network.head
    assert isinstance(dense_head, MemoryHead) and isinstance(head, CompactMemoryHead)
    assert head.entries == int(dense_head.valid.sum()) and head.codes.shape == (head.entries, 16)
    # Same frames, same cells, same order: the quantised map's coordinates are the dense map's,
    # to the int16 step of the file (max |offset| / 32767: well under 0.1 mm in this room).
    loaded = load_map(quantised.path).network.head
    exact = dense_head.values.detach()[dense_head.valid]
    check_below("int16 coordinate error (m)", float((loaded.values.detach() - exact).abs().max()), 1e-4)
    report = map_size_report(quantised.path)
    assert report["file_mb"] < 0.5 * map_size_report(dense.path)["file_mb"]
    assert report["dominant"] == "encoder"  # float16 encoder weights (1.6 MB) outweigh the tiny memory


def test_default_maps_localise_the_tiny_scene(tiny_maps, tiny):
    _, test_frames = tiny
    result = tiny_maps["default"]
    # The map records its covariance calibration (None here: the tiny scene holds out one frame).
    assert "covariance_scale" in result.training["validation"]
    # The tiny scene's 23 mapping frames are 15 deg apart: each shows something new, all are kept.
    assert result.training["data"]["keyframes"]["kept"] == result.training["data"]["keyframes"]["considered"]
    localizer = Localizer(result.path, device="cpu")
    errors = []
    for index, frame in enumerate(test_frames):
        estimate = localizer.localize(frame.image_rgb, frame.intrinsics, seed=index)
        errors.append(pose_errors(estimate.world_T_cam, frame.world_T_cam)[0] if estimate.success else np.inf)
    assert np.median(errors) < 0.4, errors  # as the dense map's test asks of 96-px frames


def test_rgb_mode_builds_a_compact_map(tiny, tmp_path):
    frames, _ = tiny
    result = _map(frames, tmp_path / "rgb.pt", mode="rgb")
    head = load_map(result.path).network.head
    assert isinstance(head, CompactMemoryHead) and head.entries > 0
    assert int(head.frame_start[-1]) == head.entries


# --- the map file ------------------------------------------------------------------------------------


def _rewrite(path, source, change):
    payload = torch.load(source, weights_only=True)
    change(payload["state_dict"])
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("change, problem", [
    (lambda sd: sd.__setitem__("head.coords_q", sd["head.coords_q"].float()), "coords_q must be an .N, 3. int16"),
    (lambda sd: sd.pop("head.coords_step_m"), "coords_step_m must be one positive finite number"),
    (lambda sd: sd.__setitem__("head.coords_step_m", torch.tensor(float("nan"))), "coords_step_m"),
    (lambda sd: sd["head.frame_start"].__setitem__(1, 10**6), "frame_start is not an offset table"),
    (lambda sd: sd.__setitem__("head.codes", sd["head.codes"].long()), "codes must be uint8"),
    (lambda sd: sd["head.codebooks"].__setitem__((0, 0, 0), float("inf")), "non-finite weights in head.codebooks"),
    (lambda sd: sd.__setitem__("head.codes", sd["head.codes"][:-1]), "rising from 0 to the [0-9]+ entries"),
])
def test_a_corrupt_compressed_section_is_refused_with_the_problem_named(tiny_maps, tmp_path, change, problem):
    path = _rewrite(tmp_path / "bad.pt", tiny_maps["quantised"].path, change)
    with pytest.raises(MapFileError, match=problem):
        load_map(path)


def test_the_file_format_is_version_2_and_packs_coordinates_as_int16(tiny_maps):
    payload = map_to_dict(tiny_maps["quantised"].network)
    assert payload["format_version"] == MAP_FORMAT_VERSION == 2
    state = payload["state_dict"]
    assert "head.values" not in state and state["head.coords_q"].dtype == torch.int16
    assert all(v.dtype == torch.float16 for k, v in state.items() if k.startswith("encoder."))
    unpacked, problems = unpack_state(state)
    assert problems == [] and unpacked["head.values"].dtype == torch.float32
    again = pack_state(unpacked)
    assert torch.equal(again["head.coords_q"], state["head.coords_q"])


def test_an_old_format_1_memory_map_loads_and_predicts_as_it_did():
    """test/fixtures/tiny_memory_map_fb52886.pt: a dense memory map written by fb52886
    (scripts/make_old_memory_map_fixture.py), with the coordinates that code predicted."""
    scene_map = load_map(FIXTURES / "tiny_memory_map_fb52886.pt")
    assert scene_map.format_version == 1 and isinstance(scene_map.network.head, MemoryHead)
    frame = next(iter(get_scene("tiny").render_frames("test")))
    coords, _, _ = Localizer(scene_map, device="cpu").predict(frame.image_rgb)
    old = torch.from_numpy(np.load(FIXTURES / "tiny_memory_map_fb52886_test0_coords_m.npy"))
    # The same exact lookup: identical keys win, so coordinates agree to float32 rounding of the
    # encoder's sums; a near-tie may flip to another key on another BLAS (allowed: 2 % of cells).
    moved = ((coords - old).norm(dim=1) > 1e-4).float().mean()  # per cell: coords are (N, 3)
    check_below("fraction of cells predicted differently from fb52886", float(moved), 0.02)


def test_the_keyframe_view_angle_follows_the_mode_unless_given():
    assert mp.KeyframeOptions().for_mode("rgbd").max_view_angle_deg == 5.0
    assert mp.KeyframeOptions().for_mode("rgb").max_view_angle_deg == 3.0
    assert mp.KeyframeOptions(max_view_angle_deg=8.0).for_mode("rgb").max_view_angle_deg == 8.0
    with pytest.raises(ValueError, match="max_view_angle_deg must be positive"):
        mp.KeyframeOptions(max_view_angle_deg=0.0)


def test_an_interrupted_compact_run_resumes_with_the_compact_memory(tiny, tmp_path, monkeypatch):
    frames, _ = tiny
    out = tmp_path / "resumed.pt"
    options = mp.MappingOptions(mode="rgbd", end_to_end=True, input_height_px=INPUT_HEIGHT_PX, progress=False,
                                device="cpu", max_e2e_steps=2, e2e_lr=1e-3, checkpoint_every_s=1e9)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        monkeypatch.setattr("dsac_ros.mapping.run.end_to_end_stage", interrupted)
        with pytest.raises(KeyboardInterrupt):
            mp.map_recording(frames, out, options, log=lambda message: None)
        saved = mp.Checkpoints(out).load_state()
        assert saved.stage == mp.Stage.E2E and saved.stage_state(mp.Stage.HEAD)["head_config"]["layout"] == "pq"
        monkeypatch.undo()
        result = mp.map_recording(iter(()), out, options, resume=True, log=lambda message: None)
    head = load_map(out).network.head
    assert isinstance(head, CompactMemoryHead) and result.training["stages"]["end_to_end"]["steps"] == 2
    # The end-to-end stage trained the compact memory's coordinates, starting from the saved ones.
    before = saved.stage_state(mp.Stage.HEAD)["head"]["values"]
    assert head.values.shape == before.shape and not torch.equal(head.values.detach(), before)
