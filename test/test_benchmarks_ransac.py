"""The RANSAC benchmark's problem generator and its JSON output (the benchmark measures; this checks its shape)."""

import argparse
import json

import numpy as np

from dsac_ros.cli import bench as bench_cli
from dsac_ros.benchmarks.ransac import make_problem
from dsac_ros.geometry import invert_pose, project_points, transform_points

ROW_KEYS = {"method", "hypotheses", "outlier_ratio", "problems", "success_5cm_5deg_pct", "median_translation_cm",
            "median_rotation_deg", "median_ms", "p95_ms"}


def test_problem_has_the_specified_grid_noise_and_outlier_ratio():
    problem = make_problem(np.random.default_rng(0), 0.5)
    assert problem.pixels_xy.shape == (4800, 2) and problem.coords_world.shape == (4800, 3)
    np.testing.assert_array_equal(problem.pixels_xy[:2], [[4, 4], [12, 4]])  # cell centres 8x + 4, row-major
    assert problem.outlier.sum() == 2400
    cam = transform_points(invert_pose(problem.world_T_cam), problem.coords_world)
    error = np.linalg.norm(project_points(cam, problem.intrinsics.K) - problem.pixels_xy, axis=1)
    assert 0.9 < np.sqrt(np.mean(error[~problem.outlier] ** 2)) / np.sqrt(2) < 1.1  # 1 px per axis
    assert np.median(error[problem.outlier]) > 50
    assert np.all((cam[:, 2] > 1.9) & (cam[:, 2] < 6.1))  # a few metres, every point in front


def test_bench_ransac_verb_writes_rows_for_every_method(tmp_path):
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    out = tmp_path / "ransac.json"
    args = parser.parse_args(["ransac", "--json", str(out), "--problems", "2", "--outlier-ratios", "0.5"])
    assert bench_cli.run(args) == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["hypotheses"]) for r in rows] == [("dsac", 64), ("dsac", 256), ("poselib", 0),
                                                               ("opencv_magsac", 0)]
    for row in rows:
        assert set(row) == ROW_KEYS and row["problems"] == 2 and row["outlier_ratio"] == 0.5
        assert row["success_5cm_5deg_pct"] == 100.0  # an easy setting every method solves


def test_one_registry_names_every_benchmark_and_its_bench_entry_point():
    from pathlib import Path

    from dsac_ros.benchmarks import BENCHMARKS, script_path

    repo = Path(__file__).resolve().parents[1]
    scripts = {path.stem[len("bench_"):] for path in (repo / "bench").glob("bench_*.py")}
    assert scripts == set(BENCHMARKS)
    for name in BENCHMARKS:
        text = (repo / script_path(name)).read_text()
        assert "sys.path.insert" not in text, name  # the package is installed (pip install -e . / colcon)


def test_bench_help_lists_every_benchmark(capsys):
    # argparse %-formats help strings: one benchmark's "10 %" once broke `dsac-ros bench --help`.
    from dsac_ros.benchmarks import BENCHMARKS
    parser = argparse.ArgumentParser(prog="dsac-ros bench")
    bench_cli.add_arguments(parser)
    try:
        parser.parse_args(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in BENCHMARKS) and "10 %" in listed
