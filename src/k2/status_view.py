"""The live status of a local run: collected from the ingestors' /metrics and the
Iceberg tables' snapshot summaries (cheap: no data is scanned), rendered as text.

Collection does I/O; `render` is pure so it can be tested on plain data.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from k2.contracts import tables


@dataclass
class LayerStatus:
    table: str
    rows: int = 0
    snapshots: int = 0
    last_commit_age_s: float | None = None


@dataclass
class FeedStatus:
    exchange: str
    trades_total: float = 0.0
    trades_per_s: float = 0.0
    errors: float = 0.0
    dead_letters: float = 0.0
    up: bool = False


@dataclass
class Status:
    elapsed_s: float
    feeds: list[FeedStatus] = field(default_factory=list)
    layers: list[LayerStatus] = field(default_factory=list)
    processes: dict[str, bool] = field(default_factory=dict)
    gold_by_exchange: dict[str, int] = field(default_factory=dict)  # newest hour of gold

    def rows(self, table: str) -> int:
        return next((layer.rows for layer in self.layers if layer.table == table), 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed_s, 1),
            "feeds": [vars(f) for f in self.feeds],
            "layers": [vars(layer) for layer in self.layers],
            "processes": dict(self.processes),
            "gold_by_exchange": dict(self.gold_by_exchange),
        }


def parse_prometheus(text: str) -> dict[tuple[str, str], float]:
    """(metric name, exchange label) -> value, for K2's ingestor metrics (pure)."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            name_labels, value = line.rsplit(" ", 1)
            name, _, labels = name_labels.partition("{")
            exchange = ""
            for part in labels.rstrip("}").split(","):
                key, _, val = part.partition("=")
                if key == "exchange":
                    exchange = val.strip('"')
            out[(name, exchange)] = out.get((name, exchange), 0.0) + float(value)
        except ValueError:
            continue
    return out


def scrape(url: str, timeout: float = 1.0) -> dict[tuple[str, str], float]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return parse_prometheus(resp.read().decode())
    except OSError:
        return {}


def metric(values: dict[tuple[str, str], float], name: str) -> float:
    """Sum over exchanges of the ingestor metric `k2_ingest_<name>` (pure)."""
    return sum(v for (n, _), v in values.items() if n == f"k2_ingest_{name}")


def layer_status(catalog: Any, identifier: str, now: float) -> LayerStatus:
    status = LayerStatus(identifier.split(".")[-1])
    try:
        table = catalog.load_table(identifier)
    except Exception:  # noqa: BLE001 - not created yet: show zeros
        return status
    snap = table.current_snapshot()
    status.snapshots = len(table.snapshots())
    if snap is not None:
        summary = snap.summary.additional_properties if snap.summary else {}
        status.rows = int(summary.get("total-records", 0))
        status.last_commit_age_s = max(0.0, now - snap.timestamp_ms / 1000)
    return status


def render(status: Status) -> str:
    """A compact, aligned view (pure)."""
    lines = [
        f"K2 local pipeline — running {status.elapsed_s:5.0f}s   (Ctrl-C stops; state is kept)"
    ]
    lines.append("")
    lines.append(
        f"{'feed':<10}{'trades':>12}{'trades/s':>10}{'errors':>8}{'dead-letter':>13}  state"
    )
    for f in status.feeds:
        state = "up" if f.up else "DOWN"
        lines.append(
            f"{f.exchange.lower():<10}{f.trades_total:>12.0f}{f.trades_per_s:>10.0f}"
            f"{f.errors:>8.0f}{f.dead_letters:>13.0f}  {state}"
        )
    lines.append("")
    lines.append(f"{'table':<24}{'rows':>12}{'commits':>9}{'last commit':>13}")
    for layer in status.layers:
        age = "-" if layer.last_commit_age_s is None else f"{layer.last_commit_age_s:.0f}s ago"
        lines.append(f"{layer.table:<24}{layer.rows:>12}{layer.snapshots:>9}{age:>13}")
    if status.gold_by_exchange:
        per = "   ".join(f"{ex.lower()} {n}" for ex, n in sorted(status.gold_by_exchange.items()))
        lines.append(f"gold, newest hour by exchange: {per}")
    down = [name for name, alive in status.processes.items() if not alive]
    if down:
        lines.append("")
        lines.append(
            "stopped unexpectedly: " + ", ".join(down) + "  (see logs in the run directory)"
        )
    return "\n".join(lines)


class Collector:
    """Keeps the previous sample so trades/s is a rate, not a total."""

    def __init__(self, catalog: Any, namespace: str, metrics_urls: dict[str, str]) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self.metrics_urls = metrics_urls
        self._last: dict[str, tuple[float, float]] = {}
        self.started = time.monotonic()
        self._gold: Any = None
        self._gold_at = 0.0
        self._gold_by_exchange: dict[str, int] = {}
        self.gold_error = ""

    def gold_by_exchange(self) -> dict[str, int]:
        """Trades per exchange in gold's newest hour (k2 query's `counts`), every 10 s."""
        if time.monotonic() - self._gold_at < 10:
            return self._gold_by_exchange
        self._gold_at = time.monotonic()
        try:
            from k2.gold_queries import GoldReader

            if self._gold is None:
                self._gold = GoldReader.load(self.catalog, f"{self.namespace}.{tables.GOLD.name}")
            self._gold.refresh()
            result = self._gold.counts()
            out: dict[str, int] = {}
            for row in result.rows:
                out[str(row[2])] = out.get(str(row[2]), 0) + int(row[3])
            self._gold_by_exchange = out
        except Exception as exc:  # noqa: BLE001 - gold not there yet: keep the last answer
            self.gold_error = str(exc)
        return self._gold_by_exchange

    def collect(self, processes: dict[str, bool]) -> Status:
        now_mono, now = time.monotonic(), time.time()
        status = Status(elapsed_s=now_mono - self.started, processes=processes)
        for exchange, url in self.metrics_urls.items():
            values = scrape(url)
            total = metric(values, "trades_total")
            prev_t, prev_total = self._last.get(exchange, (now_mono, total))
            rate = (total - prev_total) / (now_mono - prev_t) if now_mono > prev_t else 0.0
            self._last[exchange] = (now_mono, total)
            status.feeds.append(
                FeedStatus(
                    exchange=exchange,
                    trades_total=total,
                    trades_per_s=max(rate, 0.0),
                    errors=metric(values, "parse_errors_total")
                    + metric(values, "encode_errors_total"),
                    dead_letters=metric(values, "dead_letters_total"),
                    up=bool(values),
                )
            )
        for spec in tables.ALL_TABLES:
            status.layers.append(layer_status(self.catalog, f"{self.namespace}.{spec.name}", now))
        if status.rows(tables.GOLD.name):
            status.gold_by_exchange = self.gold_by_exchange()
        return status
