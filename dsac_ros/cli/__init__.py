"""``dsac-ros``: one command line for rendering, mapping, evaluation, replay and benchmarks.

The one home of the verbs: each is a module of this package with ``add_arguments(parser)`` and
``run(args) -> int`` calling a library function (synth, map, evaluate, evaluate_live, replay,
pretrain_encoder, bench; recording holds the topic/frame options they share). Modules are imported
only when their verb runs, so ``dsac-ros --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, one-line help). Order is the order a user meets them.
VERBS: dict[str, tuple[str, str]] = {
    "synth": ("dsac_ros.cli.synth", "render a standard synthetic scene to a bag or folder"),
    "map": ("dsac_ros.cli.map", "train a scene model (map file) from a folder or bag"),
    "evaluate": ("dsac_ros.cli.evaluate", "localise every frame of a folder or bag and report errors"),
    "evaluate-live": ("dsac_ros.cli.evaluate_live", "replay a bag through the ROS node and report errors"),
    "replay": ("dsac_ros.cli.replay", "play a rosbag2 into the live ROS graph, publishing /clock"),
    "pretrain-encoder": ("dsac_ros.cli.pretrain_encoder", "train the scene-agnostic encoder (resumable, hours)"),
    "bench": ("dsac_ros.cli.bench", "run a benchmark (ransac, mapping, ...) and write JSON"),
}


def build_parser(verbs: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    verbs = VERBS if verbs is None else verbs
    parser = argparse.ArgumentParser(
        prog="dsac-ros",
        description="Camera relocalisation with scene coordinate regression and DSAC.",
        epilog="Run 'dsac-ros VERB --help' for the options of one verb.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_module, help_text) in verbs.items():
        sub.add_parser(verb, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"dsac-ros: unknown verb {argv[0]!r}; choose from {', '.join(VERBS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0 if argv else 2
    verb = argv[0]
    module_name, help_text = VERBS[verb]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            print(f"dsac-ros {verb}: not available in this build ({error})", file=sys.stderr)
            return 2
        raise
    verb_parser = argparse.ArgumentParser(prog=f"dsac-ros {verb}", description=help_text)
    module.add_arguments(verb_parser)
    args = verb_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)
