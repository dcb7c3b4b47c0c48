"""`k2 bench NAME --json`: run one benchmark (or all) and write its figures as JSON.

Every result records the machine (cores, memory, CPU model) and the command, so a
number never travels without its context.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BENCHMARKS = ("ingest", "bronze", "latency", "query", "recovery")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=(*BENCHMARKS, "all"))
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="directory for result files"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(f"k2.bench.{name}")
        except ModuleNotFoundError:
            continue
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser.add_argument_group(name))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(args: argparse.Namespace) -> int:
    names = BENCHMARKS if args.name == "all" else (args.name,)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    failed: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(f"k2.bench.{name}")
        except ModuleNotFoundError:
            print(f"k2 bench: {name} is not available yet", file=sys.stderr)
            continue
        print(f"k2 bench: running {name}…", file=sys.stderr)
        started = time.time()
        try:
            result = module.run(args)
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not lose the others
            import traceback

            traceback.print_exc()
            print(f"k2 bench: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            result = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        result = {
            "benchmark": name,
            "command": "k2 bench " + " ".join(sys.argv[2:]),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_seconds": round(time.time() - started, 2),
            "machine": machine(),
            **result,
        }
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        results[name] = result
    if results:
        from k2.bench import report

        (args.out / "summary.md").write_text(report.markdown(results))
        png = report.chart(results, args.out / "summary.png")
        print(
            f"k2 bench: wrote {args.out}/summary.md" + (f" and {png}" if png else ""),
            file=sys.stderr,
        )
    if args.json:
        print(
            json.dumps(
                results if len(results) != 1 else next(iter(results.values())),
                indent=2,
                default=str,
            )
        )
    return 1 if failed else 0
