"""HTTP probes and metrics: /healthz (alive), /readyz (streaming), /metrics (Prometheus).

Served from a daemon thread so a busy event loop cannot make probes time out. The
hot path keeps plain integer counters; a custom collector turns them into Prometheus
metrics when /metrics is scraped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from k2_ingestors.buffer import BoundedBuffer
from k2_ingestors.sink import SinkStats
from k2_ingestors.wsclient import ClientStats, ResilientClient


class IngestCollector(Collector):
    """Exports one ingestor's counters (labelled by exchange)."""

    def __init__(
        self,
        exchange: str,
        client: ResilientClient,
        sink_stats: SinkStats,
        buffer: BoundedBuffer[Any],
    ) -> None:
        self.exchange = exchange.lower()
        self.client = client
        self.sink_stats = sink_stats
        self.buffer = buffer

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(f"k2_ingest_{name}", doc, labels=["exchange"])
        c.add_metric([self.exchange], value)
        return c

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(f"k2_ingest_{name}", doc, labels=["exchange"])
        g.add_metric([self.exchange], value)
        return g

    def collect(self) -> Iterator[Metric]:
        s: ClientStats = self.client.stats
        k = self.sink_stats
        yield self._counter("frames", "WebSocket frames received", s.frames)
        yield self._counter("trades", "Trades emitted after deduplication", s.trades)
        yield self._counter(
            "duplicates", "Trades dropped as duplicates (reconnect/rotation overlap)", s.duplicates
        )
        yield self._counter("gaps", "Gaps in per-symbol trade id sequences", s.gaps)
        yield self._counter("missing_trades", "Trades missing inside detected gaps", s.missing)
        yield self._counter(
            "parse_errors",
            "Frames that could not be parsed (sent to the dead-letter topic)",
            s.parse_errors,
        )
        yield self._counter("connects", "Successful connections", s.connects)
        yield self._counter("connect_failures", "Failed connection attempts", s.connect_failures)
        yield self._counter(
            "disconnects", "Primary connections that ended unexpectedly", s.disconnects
        )
        yield self._counter(
            "stale_reconnects",
            "Reconnects because nothing arrived for too long",
            s.stale_reconnects,
        )
        yield self._counter("rotations", "Proactive connection rotations", s.rotations)
        yield self._counter(
            "server_shutdowns", "serverShutdown notices received", s.server_shutdowns
        )
        yield self._counter("app_pings", "Application-level pings sent", s.app_pings)
        ev = CounterMetricFamily(
            "k2_ingest_events", "Non-trade frames by kind", labels=["exchange", "kind"]
        )
        for kind, n in sorted(s.events.items()):
            ev.add_metric([self.exchange, kind], n)
        yield ev
        yield self._counter("produced", "Trades handed to the producer", k.produced)
        yield self._counter("delivered", "Messages acknowledged by Kafka", k.delivered)
        yield self._counter("delivery_errors", "Messages Kafka failed to accept", k.delivery_errors)
        yield self._counter(
            "dead_letters", "Messages sent to the dead-letter topic", k.dead_letters
        )
        yield self._counter(
            "encode_errors", "Trades that could not be encoded as Avro v3", k.encode_errors
        )
        yield self._counter(
            "producer_queue_full",
            "Times the producer queue was full (Kafka backpressure)",
            k.queue_full,
        )
        yield self._gauge("buffer_trades", "Trades waiting in the bounded buffer", self.buffer.size)
        yield self._gauge(
            "buffer_capacity", "Capacity of the bounded buffer", self.buffer.max_items
        )
        yield self._counter(
            "backpressure_seconds",
            "Seconds the reader waited on a full buffer",
            self.buffer.blocked_seconds,
        )
        yield self._gauge("connected", "1 when a connection is open", 1.0 if s.connected else 0.0)
        yield self._gauge(
            "subscribed", "1 when the trade subscription is confirmed", 1.0 if s.subscribed else 0.0
        )
        yield self._gauge(
            "circuit_open",
            "1 when the circuit breaker is open",
            1.0 if self.client.breaker.state == "open" else 0.0,
        )
        lat = list(k.latencies_ms)
        if lat:
            ordered = sorted(lat)
            q = GaugeMetricFamily(
                "k2_ingest_produce_latency_ms",
                "Produce->ack latency of recent sampled trades",
                labels=["exchange", "quantile"],
            )
            for name, frac in (("0.5", 0.5), ("0.99", 0.99)):
                q.add_metric(
                    [self.exchange, name], ordered[min(len(ordered) - 1, int(frac * len(ordered)))]
                )
            yield q
        cpu = GaugeMetricFamily(
            "k2_ingest_process_cpu_seconds", "CPU seconds used by this process", labels=["exchange"]
        )
        cpu.add_metric([self.exchange], time.process_time())
        yield cpu
        age = time.monotonic() - s.last_message if s.last_message else -1.0
        yield self._gauge("seconds_since_last_message", "Age of the last frame received", age)


class HealthServer:
    """/healthz, /readyz and /metrics on `host`:`port` (0 = any free port)."""

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        alive: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",  # noqa: S104 - kubelet probes and scrapes come from outside
    ) -> None:
        self.registry = registry
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(outer.registry)
                    self._reply(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif path in ("/healthz", "/livez"):
                    ok, why = alive()
                    self._reply(200 if ok else 503, (why + "\n").encode())
                elif path == "/readyz":
                    ok, why = ready()
                    self._reply(200 if ok else 503, (why + "\n").encode())
                else:
                    self._reply(404, b"not found\n")

            def _reply(
                self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="k2-health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
