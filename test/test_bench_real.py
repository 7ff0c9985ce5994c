"""bench real: its options, its table, and its refusal without the real recording (the benchmark
itself is a bench/ run: minutes of mapping and the classical baseline)."""

import argparse

from dsac_ros.benchmarks import BENCHMARKS, real


def _args(*argv):
    parser = argparse.ArgumentParser()
    real.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_map_options_are_typed_fields():
    assert real.parse_map_options(["end_to_end=false", "input_height_px=240", "encoder_path=shipped", "minutes=2.5"]) \
        == {"end_to_end": False, "input_height_px": 240, "encoder_path": "shipped", "minutes": 2.5}


def test_without_the_recording_it_says_where_it_looked_and_exits_2(tmp_path, capsys):
    assert "real" in BENCHMARKS
    assert real.run(_args("--data", str(tmp_path / "absent"), "--out", str(tmp_path / "real.json"))) == 2
    assert "no real recording at" in capsys.readouterr().err
    assert not (tmp_path / "real.json").exists()


def test_the_table_has_a_row_per_method_and_shows_missing_values():
    row = {"method": "dsac_ros", "map": "rgbd", "query": "rgb", "pct_5cm_5deg": 96.0, "pct_2cm_2deg": 51.0,
           "pct_1cm_1deg": 10.5, "median_translation_cm": 1.98, "median_rotation_deg": 0.81, "published_pct": 100.0,
           "false_positives_25cm_10deg": 0, "false_positives_5cm_5deg": 8, "pct_inside_95_ellipsoid": None,
           "median_ms_total": 92.0, "p95_ms_total": 187.0, "map_mb": 4.0, "map_seconds": 166.0}
    table = real.markdown_table([row, {**row, "method": "sift_poselib_retrieve_10"}]).splitlines()
    assert len(table) == 4
    assert table[2].startswith("| dsac_ros | rgbd | rgb | 96.0 % | 51.0 % | 10.5 % | 1.98 cm / 0.81 deg |")
    assert "| - % |" in table[2]
