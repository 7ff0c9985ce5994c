"""The scene memory head: exact lookup, leave-one-out, unknown cells, map files, rgbd and rgb
(triangulated) mapping of the tiny scene, and gradients of the DSAC expected loss into its values."""

import dataclasses
import logging
import warnings

import numpy as np
import pytest
import torch

from dsac_ros import mapping as mp
from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import pose_errors
from dsac_ros.localizer import Localizer
from dsac_ros.mapfile import load_map, save_map
from dsac_ros.memory_head import MemoryHead
from dsac_ros.network import build_network, network_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INPUT_HEIGHT_PX = 96
# These tests are about the dense memory (format 1: every cell of every frame, exact float16 keys);
# test_compact_memory.py covers keyframes and quantised keys.
DENSE = mp.MemoryOptions(keyframes=mp.KeyframeOptions(enabled=False), subquantizers=None)


def _filled_head(frames=3, cells=6, channels=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    head = MemoryHead(channels, frames, cells, retrieve_frames=frames)
    features = torch.rand(frames, cells, channels, generator=generator) + 0.1
    offsets = torch.randn(frames, cells, 3, generator=generator)
    for f in range(frames):
        head.store(f, features[f], offsets[f])
    head.finish()
    return head, features, offsets


def test_lookup_returns_the_coordinate_of_the_nearest_key_and_can_leave_a_frame_out():
    head, features, offsets = _filled_head()
    query = features[1].half().float()  # exactly the stored (float16) keys of frame 1
    assert torch.allclose(head.lookup(query), offsets[1])
    _, index = head.lookup(query, exclude_frame=1, return_index=True)
    assert not ((index >= 6) & (index < 12)).any()  # frame 1's cells are rows 6..11
    grid = head(query.T.reshape(1, 4, 2, 3))  # (B, C, h, w) -> (B, 3, h, w), row-major cells
    assert grid.shape == (1, 3, 2, 3)
    assert torch.allclose(grid[0].reshape(3, -1).T, offsets[1])


def test_unknown_cells_are_never_returned():
    head = MemoryHead(2, 1, 3, retrieve_frames=1)
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    head.store(0, keys, torch.tensor([[1.0, 1.0, 1.0], [float("nan")] * 3, [2.0, 2.0, 2.0]]))
    head.finish()
    out = head.lookup(torch.tensor([[0.0, 1.0]]))  # nearest key is the unknown one
    assert torch.isfinite(out).all() and out.tolist() in ([[1.0, 1.0, 1.0]], [[2.0, 2.0, 2.0]])
    assert not head.valid[0, 1] and head.values[0, 1].abs().sum() == 0  # stored as zero, never NaN


def test_store_refuses_a_frame_that_does_not_fit():
    head = MemoryHead(4, 2, 3)
    with pytest.raises(ValueError, match="do not fit"):
        head.store(0, torch.rand(5, 4), torch.rand(5, 3))


def test_memory_map_round_trips_through_a_map_file(tmp_path):
    config = network_config("memory")
    config["head"].update(frames=3, cells=6)
    config["encoder"] = {"channels": [4, 4, 4, 4], "residual_blocks": 0, "feature_channels": 4}
    network = build_network(config, scene_center_m=(1.0, 2.0, 3.0))
    filled, _, _ = _filled_head()
    network.head.load_state_dict(filled.state_dict())
    path = save_map(tmp_path / "memory.pt", network, input_height_px=16)
    loaded = load_map(path)
    image = torch.randn(1, 1, 16, 24)
    with torch.no_grad():
        assert torch.equal(loaded.network(image), network.eval()(image))
    assert loaded.network_config["head"]["type"] == "memory"


@pytest.fixture(scope="module")
def tiny_memory_maps(tmp_path_factory):
    scene = get_scene("tiny")
    frames = list(scene.render_frames("mapping"))
    out = tmp_path_factory.mktemp("memory")
    maps = {}
    for mode in ("rgbd", "rgb"):
        options = mp.MappingOptions(mode=mode, end_to_end=False, input_height_px=INPUT_HEIGHT_PX, progress=False,
                                    device="cpu", memory=DENSE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            maps[mode] = mp.map_recording(frames, out / f"{mode}.pt", options, log=lambda message: None)
    return maps, list(scene.render_frames("test"))


def test_rgbd_memory_map_is_built_without_training_and_localises(tiny_memory_maps):
    maps, test_frames = tiny_memory_maps
    result = maps["rgbd"]
    assert result.training["network"] == "memory"
    assert result.training["stages"]["head"]["steps"] == 0
    head = result.network.head
    assert bool(head.valid.all())  # the tiny scene has depth everywhere
    localizer = Localizer(result.path, device="cpu")
    errors = []
    for index, frame in enumerate(test_frames):
        estimate = localizer.localize(frame.image_rgb, frame.intrinsics, seed=index)
        errors.append(pose_errors(estimate.world_T_cam, frame.world_T_cam)[0] if estimate.success else np.inf)
    # Tiny 96-px frames: a map that only knew the scene centre would be metres off.
    assert np.median(errors) < 0.4, errors


def test_rgb_memory_map_triangulates_coordinates_that_agree_with_depth(tiny_memory_maps):
    maps, _ = tiny_memory_maps
    with_depth, triangulated = maps["rgbd"].network, maps["rgb"].network
    known = triangulated.head.valid
    assert known.sum() > 0.1 * known.numel()  # a good share of cells got a coordinate from images alone

    def world(network):  # values are offsets from each map's own scene centre
        return network.head.values.detach()[known] + network.scene_center_m.view(1, 3)

    error_m = (world(triangulated) - world(with_depth)).norm(dim=1)
    # 96-px frames: a cell is 8 px wide, so ray quantisation limits depth (measured median 11 cm).
    assert float(error_m.median()) < 0.2, float(error_m.median())


def test_lookup_gradients_reach_only_the_looked_up_values(tiny_memory_maps):
    maps, _ = tiny_memory_maps
    head = maps["rgbd"].network.head
    # One mapping frame's own cells, looked up with its frame left out, as the end-to-end stage does.
    offsets, index = head.lookup(head.keys[0].float(), exclude_frame=0, return_index=True)
    head.values.grad = None
    offsets.square().sum().backward()
    touched = head.values.grad.reshape(-1, 3).abs().sum(1) > 0
    assert touched.any() and not touched[: head.cells].any()  # frame 0 was left out
    assert set(torch.nonzero(touched).squeeze(1).tolist()) <= set(index.tolist())


def test_end_to_end_stage_refines_memory_values(tmp_path, tiny_memory_maps):
    maps, _ = tiny_memory_maps
    frames = list(get_scene("tiny").render_frames("mapping"))
    options = mp.MappingOptions(mode="rgbd", end_to_end=True, input_height_px=INPUT_HEIGHT_PX, progress=False,
                                device="cpu", max_e2e_steps=4, e2e_lr=1e-3, memory=DENSE,
                                e2e_ransac=dataclasses.replace(mp.MappingOptions().e2e_ransac, hypotheses=32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = mp.map_recording(frames, tmp_path / "e2e.pt", options, log=lambda message: None)
    stage = result.training["stages"]["end_to_end"]
    assert stage["steps"] == 4 and stage["steps"] > stage["skipped"]
    before, after = maps["rgbd"].network.head.values, result.network.head.values
    assert not torch.equal(before, after)
    assert torch.equal(before[~result.network.head.valid], after[~result.network.head.valid])


def test_a_call_can_search_fewer_mapping_frames_without_changing_the_map(tiny_memory_maps):
    maps, test_frames = tiny_memory_maps
    localizer = Localizer(maps["rgbd"].path, device="cpu")
    assert localizer.map_retrieve_frames == 8 and localizer.retrieve_frames is None
    frame = test_frames[0]
    coords_all, _, _ = localizer.predict(frame.image_rgb)
    coords_one, _, _ = localizer.predict(frame.image_rgb, retrieve_frames=1)
    assert not torch.equal(coords_all, coords_one)  # one frame cannot hold every nearest key
    assert localizer.network.head.retrieve_frames == 8  # the map itself is untouched
    assert torch.equal(localizer.predict(frame.image_rgb)[0], coords_all)
    one = Localizer(maps["rgbd"].path, device="cpu", retrieve_frames=1)  # a localizer-wide default
    assert torch.equal(one.predict(frame.image_rgb)[0], coords_one)
    with pytest.raises(ValueError, match="at least 1"):
        localizer.predict(frame.image_rgb, retrieve_frames=0)


def test_a_large_memory_map_is_flagged_with_the_remedy(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr("dsac_ros.mapping.stages.LARGE_MEMORY_MAP_BYTES", 1000)  # the tiny map is far above 1 kB
    frames = list(get_scene("tiny").render_frames("mapping"))[:6]
    options = mp.MappingOptions(mode="rgbd", end_to_end=False, input_height_px=INPUT_HEIGHT_PX, progress=False,
                                device="cpu", memory=DENSE)
    # The handler sits on the stage's own logger: after `launch` (test_launch) has been imported,
    # records did not always reach the root logger where caplog listens.
    stages_logger = logging.getLogger("dsac_ros.mapping.stages")
    stages_logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mp.map_recording(frames, tmp_path / "big.pt", options, log=lambda message: None)
    finally:
        stages_logger.removeHandler(caplog.handler)
    assert any("--every K" in record.getMessage() for record in caplog.records)


def test_full_mode_refuses_a_memory_head_with_a_reason():
    with pytest.raises(mp.MappingError, match="--mode rgbd or rgb with --network memory"):
        mp.MappingOptions(mode="full", network="memory")
    assert mp.MappingOptions(mode="full").network == "full" and mp.MappingOptions().network == "memory"
