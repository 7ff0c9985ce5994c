"""The node's parameter facts live in one table (dsac_ros/ros/params.py); the YAML file, the README
table and NodeSettings must agree with it."""

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rcl_interfaces", reason="params.py builds rclpy descriptors")

from dsac_ros.dsac import RansacOptions  # noqa: E402
from dsac_ros.ros.params import PARAMETERS, NodeSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def readme_default(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def test_the_yaml_file_carries_every_parameter_with_the_tables_default():
    config = yaml.safe_load((REPO / "config" / "localize.yaml").read_text())
    values = dict(flatten(config["localizer"]["ros__parameters"]))
    assert set(values) == {spec.name for spec in PARAMETERS}
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default and type(values[spec.name]) is type(spec.default), spec.name


def test_the_readme_table_lists_every_parameter_with_its_default_and_mutability():
    rows = re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \| (yes|no) \| (.+) \|$", (REPO / "README.md").read_text(), re.M)
    table = {name: (default, change, meaning) for name, default, change, meaning in rows}
    assert set(table) == {spec.name for spec in PARAMETERS}
    for spec in PARAMETERS:
        default, change, meaning = table[spec.name]
        assert default == readme_default(spec.default), spec.name
        assert change == ("no" if spec.read_only else "yes"), spec.name
        if spec.range is not None and not isinstance(spec.default, bool):
            low, high = spec.range
            assert f"Range {low:g}..{high:g}" in meaning, spec.name


def test_every_ransac_parameter_names_the_options_field_it_sets():
    class FakeNode:
        def __init__(self, **changes):
            self.values = {spec.name: spec.default for spec in PARAMETERS} | changes

        def get_parameter(self, name):
            return type("P", (), {"value": self.values[name]})()

    ransac_fields = {f.name for f in fields(RansacOptions)}
    ransac_specs = [spec for spec in PARAMETERS if spec.name.startswith("ransac.")]
    assert ransac_specs and all(spec.ransac_field in ransac_fields for spec in ransac_specs)
    assert all(spec.ransac_field is None for spec in PARAMETERS if not spec.name.startswith("ransac."))
    # Defaults: the node's RANSAC is the core's (inlier_beta 0 = derived, None in RansacOptions).
    assert NodeSettings.from_node(FakeNode()).ransac == RansacOptions()
    changed = NodeSettings.from_node(FakeNode(**{"ransac.hypotheses": 16, "ransac.inlier_beta": 0.25,
                                                 "min_inliers": 20})).ransac_options(seed=5)
    assert (changed.hypotheses, changed.inlier_beta, changed.seed) == (16, 0.25, 5)
    assert changed.min_inliers == min(RansacOptions().min_inliers, 20)
