"""Benchmarks run by ``dsac-ros bench NAME``: each writes JSON rows and prints a table.

Benchmarks measure; tests assert. Add one by writing a module with ``add_arguments(parser)`` and
``run(args) -> int`` and registering it in ``dsac_ros.benchmarks.cli.BENCHMARKS``.
"""
