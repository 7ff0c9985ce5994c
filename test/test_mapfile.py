"""Map files: round trip, and every kind of bad file refused with a message naming the problem."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dsac_ros.mapfile import MAP_FORMAT_VERSION, MapFileError, load_map, map_to_dict, save_map
from dsac_ros.network import build_network


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(3)
    return build_network("fast", scene_center_m=(1.5, -0.25, 2.0)).eval()


@pytest.fixture
def map_path(tmp_path, network):
    return save_map(tmp_path / "scene.pt", network, input_height_px=160,
                    training={"mode": "rgbd", "minutes": 2.5, "frames": np.int64(40), "source": tmp_path})


def test_round_trip_restores_network_and_description(map_path, network):
    loaded = load_map(map_path)
    assert loaded.input_height_px == 160
    assert np.allclose(loaded.scene_center_m, [1.5, -0.25, 2.0])
    assert loaded.network_config == network.config
    assert loaded.training == {"mode": "rgbd", "minutes": 2.5, "frames": 40, "source": str(map_path.parent)}
    assert loaded.normalization == {"color": "gray", "mean": 0.4, "std": 0.25}
    assert set(loaded.versions) == {"dsac_ros", "torch", "numpy"}
    image = torch.randn(1, 1, 64, 80)
    with torch.no_grad():
        assert torch.equal(loaded.network(image), network(image))
    # The file is a plain dict that a safe load reads without dsac_ros classes.
    raw = torch.load(map_path, weights_only=True)
    assert raw["format"] == "dsac_ros.map" and raw["format_version"] == MAP_FORMAT_VERSION
    assert not (map_path.parent / "scene.pt.partial").exists()


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(MapFileError, match="does not exist"):
        load_map(tmp_path / "nope.pt")
    with pytest.raises(MapFileError, match="not a file"):
        load_map(tmp_path)


def test_empty_and_foreign_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(MapFileError, match="empty"):
        load_map(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello, not a map")
    with pytest.raises(MapFileError, match="not a PyTorch file"):
        load_map(tmp_path / "text.pt")


@pytest.mark.parametrize("keep_fraction", [0.3, 0.9, 0.999])
def test_truncated_file(map_path, keep_fraction):
    data = map_path.read_bytes()
    map_path.write_bytes(data[:int(len(data) * keep_fraction)])
    with pytest.raises(MapFileError, match="truncated"):
        load_map(map_path)


def test_flipped_bytes_in_weights_are_corrupt(map_path):
    data = bytearray(map_path.read_bytes())
    with zipfile.ZipFile(map_path) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)  # the largest tensor
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    for offset in range(start + 100, start + 110):
        data[offset] ^= 0xFF
    map_path.write_bytes(bytes(data))
    with pytest.raises(MapFileError, match="corrupt"):
        load_map(map_path)


class NotAMap:
    pass


def test_pickled_objects_are_refused_by_the_safe_load(tmp_path):
    path = tmp_path / "object.pt"
    torch.save({"payload": NotAMap()}, path)
    with pytest.raises(MapFileError, match="weights_only"):
        load_map(path)


def _rewrite(path, network, **changes):
    payload = map_to_dict(network, 160)
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


def test_wrong_format_and_newer_version(tmp_path, network):
    torch.save({"state_dict": network.state_dict()}, tmp_path / "a.pt")
    with pytest.raises(MapFileError, match="wrong format None"):
        load_map(tmp_path / "a.pt")
    torch.save([1, 2, 3], tmp_path / "b.pt")
    with pytest.raises(MapFileError, match="wrong format .*list"):
        load_map(tmp_path / "b.pt")
    _rewrite(tmp_path / "c.pt", network, format_version=MAP_FORMAT_VERSION + 1)
    with pytest.raises(MapFileError, match="newer .*upgrade dsac_ros"):
        load_map(tmp_path / "c.pt")


def test_missing_keys_are_named(tmp_path, network):
    _rewrite(tmp_path / "m.pt", network, scene_center_m=None, input_height_px=None)
    with pytest.raises(MapFileError, match="missing keys scene_center_m, input_height_px"):
        load_map(tmp_path / "m.pt")


def test_weights_not_matching_the_architecture(tmp_path, network):
    state = {k: v.clone() for k, v in network.state_dict().items()}
    state["head.out.weight"] = torch.zeros(3, 64, 1, 1)
    _rewrite(tmp_path / "s.pt", network, state_dict=state)
    with pytest.raises(MapFileError, match=r"head.out.weight: shape \(3, 64, 1, 1\)"):
        load_map(tmp_path / "s.pt")
    state = {k: v.clone() for k, v in network.state_dict().items()}
    del state["encoder.project.bias"]
    _rewrite(tmp_path / "k.pt", network, state_dict=state)
    with pytest.raises(MapFileError, match="missing encoder.project.bias"):
        load_map(tmp_path / "k.pt")
    config = dict(network.config, head={"width": 64, "residual_blocks": 1})
    _rewrite(tmp_path / "c.pt", network, network_config=config)
    with pytest.raises(MapFileError, match="do not match its network_config"):
        load_map(tmp_path / "c.pt")


def test_bad_values_are_refused(tmp_path, network):
    _rewrite(tmp_path / "h.pt", network, input_height_px=100)
    with pytest.raises(MapFileError, match="multiple of 8"):
        load_map(tmp_path / "h.pt")
    _rewrite(tmp_path / "c.pt", network, scene_center_m=[0.0, float("nan"), 1.0])
    with pytest.raises(MapFileError, match="scene_center_m"):
        load_map(tmp_path / "c.pt")
    state = {k: v.clone() for k, v in network.state_dict().items()}
    state["head.out.bias"][0] = float("inf")
    _rewrite(tmp_path / "w.pt", network, state_dict=state)
    with pytest.raises(MapFileError, match="non-finite weights in head.out.bias"):
        load_map(tmp_path / "w.pt")


def test_save_refuses_metadata_a_safe_load_could_not_read(tmp_path, network):
    with pytest.raises(TypeError, match="training.when"):
        save_map(tmp_path / "x.pt", network, training={"when": object()})


def test_a_map_file_written_by_older_code_still_loads_and_predicts_the_same():
    """test/fixtures/tiny_map_e41afbf.pt was saved by commit e41afbf (before the mapping package and
    per-call localizer options; scripts/make_old_map_fixture.py), with that code's predictions."""
    import json

    from dsac_ros.data.scenes import get_scene
    from dsac_ros.geometry import pose_errors
    from dsac_ros.localizer import Localizer
    from tolerances import check_below

    fixtures = Path(__file__).resolve().parent / "fixtures"
    scene_map = load_map(fixtures / "tiny_map_e41afbf.pt")
    assert scene_map.network_config["name"] == "fixture-tiny"
    frame = next(iter(get_scene("tiny").render_frames("mapping", stride=6)))
    localizer = Localizer(scene_map, device="cpu")
    coords, _, _ = localizer.predict(frame.image_rgb)
    old = torch.from_numpy(np.load(fixtures / "tiny_map_e41afbf_frame0_coords_m.npy"))
    # float32 convolutions: another CPU or BLAS sums in another order, about 1e-6 of the
    # coordinates' few metres; 1e-4 m leaves a wide margin and still catches any real change.
    check_below("old vs new coordinates (m)", (coords - old).abs().max(), 1e-4)
    expected = json.loads((fixtures / "tiny_map_e41afbf_frame0.json").read_text())
    result = localizer.localize(frame.image_rgb, frame.intrinsics, seed=0)
    assert result.status == expected["status"] == "OK"
    # The same hypotheses win; refinement now stops on the relative gradient (issue 12), which
    # moves the optimum by far less than a millimetre.
    check_below("old vs new pose (m)", pose_errors(result.world_T_cam, np.array(expected["world_T_cam"]))[0], 1e-3)
