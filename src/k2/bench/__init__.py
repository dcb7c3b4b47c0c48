"""Benchmarks: each module `k2.bench.<name>` exposes `add_arguments(parser)` (optional)
and `run(args) -> dict`, the JSON it reports."""
