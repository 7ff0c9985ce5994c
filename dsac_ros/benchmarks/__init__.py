"""The benchmarks: each writes JSON (bench/results/) and prints a table. Benchmarks measure; tests assert.

``BENCHMARKS`` is the one registry: ``dsac-ros bench NAME`` runs one, ``make bench`` runs them all
(``scripts/run_benchmarks.py``), and each has a ``bench/bench_NAME.py`` entry point. A library
benchmark is a module here with ``add_arguments(parser)`` and ``run(args) -> int``; the others are
scripts under ``bench/`` (they need a source checkout: the test scenes' node process, the suite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Benchmark:
    help: str
    module: Optional[str] = None  # a library benchmark (add_arguments / run), else bench/bench_NAME.py only
    make_args: tuple[str, ...] = ()  # what `make bench` passes


BENCHMARKS: dict[str, Benchmark] = {
    "synth": Benchmark("renderer speed and test-to-mapping proximity of the standard scenes"),
    "ransac": Benchmark("DSAC (64/256 hypotheses) vs PoseLib LO-RANSAC vs OpenCV USAC_MAGSAC on generated 2D-3D "
                        "problems", module="dsac_ros.benchmarks.ransac",
                        make_args=("--json", "bench/results/ransac.json")),
    "localizer": Benchmark("localizer time per frame and accuracy on the standard maps"),
    "classical": Benchmark("the classical baseline: SIFT (OpenCV) + bag-of-words retrieval + ratio-test matching + "
                           "PoseLib LO-RANSAC, rgbd (depth-lifted) and rgb (triangulated), on the standard scenes",
                           module="dsac_ros.benchmarks.classical"),
    "frame": Benchmark("one 640x480 frame end to end (decode, prepare, encoder, lookup, DSAC, publish) per encoder "
                       "backend side by side, and hopeless frames with and without a DSAC time budget",
                       module="dsac_ros.benchmarks.frame"),
    "node": Benchmark("the localizer node over real DDS: latency and CPU share"),
    "mapping": Benchmark("map the standard synthetic scenes on a wall-clock budget and evaluate the maps",
                         module="dsac_ros.benchmarks.mapping"),
    "compact": Benchmark("map size: dense memory maps against compact ones (keyframes, quantised keys) on the "
                         "standard scenes and a 4,000-frame recording", module="dsac_ros.benchmarks.compact"),
    "cameras": Benchmark("maps from a Kinect-like sensor's and a distorted lens's bags against pinhole ones, "
                         "offline and live, and the distortion-ignored baseline", module="dsac_ros.benchmarks.cameras"),
    "triangulation": Benchmark("rgb maps' coordinates against the renderer's truth, cell by cell: the plane sweep "
                               "against triangulated matches", module="dsac_ros.benchmarks.triangulation"),
    "transfer": Benchmark("encoders side by side on held-out procedural rooms: map each (rgbd, rgb) and localise "
                          "nearby views; how well a leaner or retrained encoder transfers",
                          module="dsac_ros.benchmarks.transfer"),
    "real": Benchmark("a real recording (7-Scenes redkitchen, ../shared/real/) in its release format: dsac_ros "
                      "rgbd and rgb maps, RGB and RGB-D queries, beside SIFT + PoseLib with and without retrieval; "
                      "--ablation: what loses on real images", module="dsac_ros.benchmarks.real"),
    "soak": Benchmark("the localizer node over 10,000 frames of a looped bag: memory, latency, drops; with 10 % "
                      "faults mixed in; with map swaps under load"),
    "tolerances": Benchmark("the test suite's numeric tolerances across thread counts and BLAS code paths"),
}


def script_path(name: str) -> str:
    """The bench/ entry point of a benchmark, relative to the repository root."""
    return f"bench/bench_{name}.py"


__all__ = ["BENCHMARKS", "Benchmark", "script_path"]
