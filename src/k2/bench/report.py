"""Turns benchmark JSON into a markdown table and a PNG chart (throughput and latency).

Pure flattening/selection, then one matplotlib call: the figures are whatever the
benchmarks measured, nothing is recomputed here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SKIP = ("machine", "started_at", "command", "benchmark")


def flatten(result: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric leaves as dotted keys (pure)."""
    for key, value in result.items():
        if key in SKIP:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            yield name, float(value)
        elif isinstance(value, Mapping):
            yield from flatten(value, f"{name}.")


def is_throughput(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return "per_s" in leaf or leaf.endswith(("_per_second", "rows_s", "msg_s", "trades_s"))


def is_duration(key: str) -> bool:
    """A single time in seconds, e.g. recovery's first_commit_s (not a rate, not a target)."""
    leaf = key.rsplit(".", 1)[-1]
    return (
        leaf.endswith("_s")
        and not is_throughput(key)
        and not any(word in key for word in ("target", "window"))
    )


NOT_LATENCY = ("rows", "files", "cpu", "plan", "read", "batch", "refresh", "target")


def is_latency(key: str) -> bool:
    """A p50/p99 of a time (not of a count, CPU or a planning step)."""
    leaf = key.rsplit(".", 1)[-1]
    return (
        any(p in leaf for p in ("p50", "p99"))
        and not is_throughput(key)
        and not any(word in key for word in NOT_LATENCY)
    )


def seconds(key: str, value: float) -> float:
    """Latencies are reported in ms or s; the chart puts them on one axis, in seconds."""
    return value / 1000 if "_ms" in key else value


def targets(results: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, str, bool]]:
    """(benchmark, meets_* key, verdict) for every target check a benchmark made (pure);
    a benchmark that failed to run is a target not met."""
    for name, result in results.items():
        if "error" in result:
            yield name, f"ran ({result['error']})", False
        for key, value in result.items():
            if key.startswith("meets_") and isinstance(value, bool):
                yield name, key, value


def markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    for name, result in results.items():
        for key, value in flatten(result):
            if (
                is_throughput(key)
                or is_latency(key)
                or is_duration(key)
                or "ratio" in key
                or "peak" in key
                or "failed" in key
            ):
                lines.append(f"| {name} | {key} | {value:,.2f} |")
    verdicts = list(targets(results))
    if verdicts:
        lines += ["", "| benchmark | target | met |", "|---|---|---|"]
        lines += [f"| {name} | {key} | {'yes' if met else '**no**'} |" for name, key, met in verdicts]
    machine = next((r.get("machine") for r in results.values() if r.get("machine")), None)
    if machine:
        lines.append("")
        lines.append(
            f"Machine: {machine.get('cores')} cores, {machine.get('memory_gb')} GB, {machine.get('cpu')}"
        )
    return "\n".join(lines) + "\n"


def chart(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Two panels: throughputs (log scale) and latency percentiles. None if nothing to plot."""
    throughput = [
        (f"{n}.{k}", v)
        for n, r in results.items()
        for k, v in flatten(r)
        if is_throughput(k) and "target" not in k and "mb_per_s" not in k
    ]
    latency = [
        (f"{n}.{k}", seconds(k, v))
        for n, r in results.items()
        for k, v in flatten(r)
        if is_latency(k) or is_duration(k)
    ]
    if not throughput and not latency:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2, figsize=(14, max(4, 0.35 * max(len(throughput), len(latency)) + 2))
    )
    for ax, rows, title in (
        (axes[0], throughput, "throughput (per second)"),
        (axes[1], latency, "latency (seconds, log scale)"),
    ):
        if rows:
            labels, values = zip(*rows, strict=True)
            ax.barh(range(len(values)), values, color="#3b7dd8")
            ax.set_yticks(range(len(values)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xscale("log")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
