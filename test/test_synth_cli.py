"""`dsac-ros synth`: lists the standard scenes and writes readable recordings."""

import numpy as np

from dsac_ros.cli import main
from dsac_ros.data import read_frames
from dsac_ros.data.scenes import get_scene


def test_list_prints_small_room_first(capsys):
    assert main(["synth", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert names[0] == "small_room" and "large_room" in names


def test_synth_folder_and_bag(tmp_path):
    assert main(["synth", "tiny", "--out", str(tmp_path / "f"), "--format", "folder", "--split", "test", "--quiet"]) == 0
    assert main(["synth", "tiny", "--out", str(tmp_path / "b"), "--split", "test", "--quiet"]) == 0
    expected = get_scene("tiny").poses("test")
    for path in (tmp_path / "f", tmp_path / "b"):
        frames = list(read_frames(path))
        assert len(frames) == len(expected)
        np.testing.assert_allclose(np.stack([f.world_T_cam for f in frames]), expected, atol=1e-12)
        assert frames[0].image_rgb.shape == (120, 160, 3)


def test_synth_refuses_unknown_scene_and_existing_output(tmp_path, capsys):
    assert main(["synth", "no_such_room", "--out", str(tmp_path / "x")]) == 2
    assert "small_room" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    assert main(["synth", "tiny", "--out", str(tmp_path / "b")]) == 2
