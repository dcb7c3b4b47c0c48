"""One ingestor: resilient client -> bounded buffer -> sink, with probes and metrics.

    ingestor = Ingestor(config_for("binance", symbols=("BTC/USDT",)))
    await ingestor.run()                 # until ingestor.stop() / SIGTERM
    handle = ingestor.start_background() # or in a thread of its own; handle.stop()

Shutdown is graceful: stop reading, drain the buffer into the sink, flush the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry

from k2_ingestors.buffer import BoundedBuffer
from k2_ingestors.config import IngestConfig
from k2_ingestors.health import HealthServer, IngestCollector
from k2_ingestors.sink import JsonlSink, KafkaSink, Sink
from k2_ingestors.wsclient import ResilientClient

log = logging.getLogger("k2.ingest")


def build_sink(config: IngestConfig) -> Sink:
    if config.sink == "jsonl":
        return JsonlSink()
    return KafkaSink(
        config.bootstrap_servers,
        config.schema_registry_url,
        config.topic,
        exchange=config.exchange,
        dead_letter_topic=config.dead_letter_topic,
        partitions=config.partitions,
    )


class Ingestor:
    def __init__(self, config: IngestConfig, sink: Sink | None = None) -> None:
        self.config = config
        self.adapter = config.adapter()
        self.buffer: BoundedBuffer[Any] = BoundedBuffer(config.buffer_size)
        self._sink = sink
        self.client = ResilientClient(
            self.adapter,
            config.endpoint_urls(),
            self.buffer.put,
            policy=config.policy,
            dead_letter=self._dead_letter,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.health: HealthServer | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started = time.monotonic()
        self.running = False
        self.draining_error: BaseException | None = None

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            self._sink = build_sink(self.config)
        return self._sink

    # ---- probes ---------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        if self.draining_error is not None:
            return False, f"sink failed: {self.draining_error}"
        return (True, "ok") if self.running else (False, "not running")

    def ready(self) -> tuple[bool, str]:
        s = self.client.stats
        if not self.running:
            return False, "not running"
        if self.client.breaker.state == "open":
            return False, "circuit open"
        if not s.connected:
            return False, "not connected"
        if not s.subscribed:
            return False, "not subscribed"
        if (
            self.client.stale_after
            and time.monotonic() - s.last_message > 2 * self.client.stale_after
        ):
            return False, "stale"
        return True, f"streaming from {s.url}"

    # ---- running --------------------------------------------------------------------
    async def _dead_letter(self, raw: bytes, error: str, url: str) -> None:
        self.sink.dead_letter(
            raw, error, {"url": url, "received_at_us": str(time.time_ns() // 1000)}
        )

    async def _drain(self) -> None:
        sink = self.sink
        buffer = self.buffer
        while True:
            batches = await buffer.get(20_000)
            if not batches:
                return
            if len(batches) == 1:
                sink.send(batches[0])
            else:
                records: list[Any] = []
                for b in batches:
                    records += b
                sink.send(records)
            sink.poll()
            await asyncio.sleep(0)

    def stop(self) -> None:
        """Ask a running ingestor to stop (thread-safe)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self, install_signal_handlers: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sink = self.sink  # Kafka: topics created, schema registered, before connecting
        self.registry.register(
            IngestCollector(self.config.exchange, self.client, sink.stats, self.buffer)
        )
        if self.config.metrics_port is not None:
            self.health = HealthServer(
                self.config.metrics_port,
                self.registry,
                self.ready,
                self.alive,
                host=self.config.metrics_host,
            ).start()
            log.info("health and metrics on port %d", self.health.port)
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.add_signal_handler(sig, self._stop.set)
        self.running = True
        drain = self._loop.create_task(self._drain())
        client = self._loop.create_task(self.client.run())
        stop_wait = self._loop.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                {drain, client, stop_wait}, return_when=asyncio.FIRST_COMPLETED
            )
            if drain in done and drain.exception() is not None:
                self.draining_error = drain.exception()
                log.error("sink failed: %s", self.draining_error)
        finally:
            log.info(
                "%s ingestor stopping: draining %d buffered trade(s)",
                self.config.exchange,
                self.buffer.size,
            )
            self.client.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(client, 15)
            self.buffer.close()
            if not drain.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(drain, 60)
            stop_wait.cancel()
            remaining = await asyncio.to_thread(sink.flush, 30.0)
            sink.close()
            self.running = False
            if self.health is not None:
                self.health.stop()
            log.info("%s ingestor stopped (%d undelivered)", self.config.exchange, remaining)
        if self.draining_error is not None:
            raise self.draining_error

    def run_forever(self) -> None:
        """Blocking run with SIGTERM/SIGINT handling (what `k2 ingest` does)."""
        asyncio.run(self.run(install_signal_handlers=True))

    def start_background(self) -> BackgroundIngestor:
        """Run on a thread with its own event loop (in-process use, e.g. `k2 up`)."""
        return BackgroundIngestor(self).start()


class BackgroundIngestor:
    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"ingest-{ingestor.config.exchange.lower()}", daemon=True
        )

    def _main(self) -> None:
        try:
            asyncio.run(self.ingestor.run())
        except BaseException as exc:  # noqa: BLE001 - reported through .error
            self.error = exc

    def start(self) -> BackgroundIngestor:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + 5
        while (
            self.ingestor._stop is None and time.monotonic() < deadline and self._thread.is_alive()
        ):
            time.sleep(0.01)
        self.ingestor.stop()
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()
