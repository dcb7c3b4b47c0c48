"""The resilient client's patterns, each against an in-process replay server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from k2_ingestors.app import Ingestor
from k2_ingestors.buffer import BoundedBuffer
from k2_ingestors.config import IngestConfig, config_for
from k2_ingestors.replay.server import Fault, ReplayServer
from k2_ingestors.sink import MemorySink
from k2_ingestors.wsclient import Backoff, CircuitBreaker, ClientPolicy

pytestmark = pytest.mark.timeout(60)


def fast_policy(**over: Any) -> ClientPolicy:
    p = ClientPolicy(
        backoff_initial=0.05,
        backoff_max=0.2,
        healthy_after=0.5,
        open_timeout=2.0,
        close_timeout=0.5,
        overlap_timeout=3.0,
    )
    for k, v in over.items():
        setattr(p, k, v)
    return p


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/stream"


async def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def with_ingestor(
    server: ReplayServer,
    check: Callable[[Ingestor, MemorySink], Awaitable[None]],
    *,
    urls: tuple[str, ...] | None = None,
    policy: ClientPolicy | None = None,
    sink: MemorySink | None = None,
    **config: Any,
) -> Ingestor:
    sink = sink or MemorySink()
    cfg: IngestConfig = config_for(
        server.exchange,
        env={},
        urls=urls or (server.url,),
        sink="jsonl",
        symbols=server.tape.symbols if server.tape else None,
        **config,
    )
    cfg.policy = policy or fast_policy()
    ing = Ingestor(cfg, sink=sink)
    task = asyncio.get_running_loop().create_task(ing.run())
    try:
        await check(ing, sink)
    finally:
        ing.stop()
        await asyncio.wait_for(task, 30)
    return ing


def assert_exactly_once(server: ReplayServer, sink: MemorySink) -> None:
    expected = [(t.symbol, str(t.trade_id)) for t in server.expected_trades()]
    got = [(t["symbol"], t["trade_id"]) for t in sink.trades]
    assert len(got) == len(set(got)), "duplicates were emitted"
    assert sorted(got) == sorted(expected)
    for sym in {s for s, _ in got}:  # in order per symbol
        ids = [int(i) for s, i in got if s == sym]
        assert ids == sorted(ids)


# ---- pure patterns ---------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    b = Backoff(1.0, 8.0, 2.0, jitter=0.5, rng=random.Random(3))
    delays = [b.next() for _ in range(6)]
    for d, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.5 <= d <= base
    assert len(set(delays)) == 6  # jittered
    b.reset()
    assert 0.5 <= b.next() <= 1.0


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    cb = CircuitBreaker(threshold=3, cooldown=10.0, clock=lambda: now[0])
    for _ in range(2):
        cb.record_failure()
    assert cb.state == "closed" and cb.retry_in() == 0
    cb.record_failure()
    assert cb.state == "open" and cb.retry_in() == pytest.approx(10.0)
    now[0] = 10.0
    assert cb.state == "half_open" and cb.retry_in() == 0
    cb.record_failure()  # the trial failed
    assert cb.state == "open" and cb.times_opened == 2
    now[0] = 25.0
    cb.record_success()
    assert cb.state == "closed" and cb.failures == 0


async def _bounded_buffer() -> None:
    buf: BoundedBuffer[int] = BoundedBuffer(10)
    await buf.put(list(range(6)))
    waiter = asyncio.get_running_loop().create_task(buf.put(list(range(6))))
    await asyncio.sleep(0.05)
    assert not waiter.done() and buf.size == 6  # full: the producer waits
    got = await buf.get()
    assert got == [list(range(6))]
    await asyncio.wait_for(waiter, 1)
    assert buf.size == 6 and buf.blocked_count == 1 and buf.high_water <= 10
    buf.close()
    assert await buf.get() == [list(range(6))]
    assert await buf.get() == []


def test_bounded_buffer_backpressure() -> None:
    asyncio.run(_bounded_buffer())


# ---- against the replay server ----------------------------------------------------------


def test_streams_all_trades_in_order() -> None:
    async def main() -> None:
        async with ReplayServer("binance", rate=5000, count=2000, seed=11) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 2000)

            await with_ingestor(srv, check)
            # the sink got exactly what was served
        assert srv.expected_count() == 2000

    asyncio.run(main())


def test_reconnects_after_drop_without_loss() -> None:
    async def main() -> None:
        async with ReplayServer(
            "binance", rate=4000, count=3000, faults=[Fault("drop", at=700), Fault("drop", at=1900)]
        ) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 3000)
                assert ing.client.stats.disconnects == 2 and ing.client.stats.connects == 3

            sink = MemorySink()
            await with_ingestor(srv, check, sink=sink)
            assert srv.drops == 2
            assert_exactly_once(srv, sink)

    asyncio.run(main())


def test_failover_to_next_endpoint() -> None:
    async def main() -> None:
        async with ReplayServer("binance", rate=2000, count=300) as srv:
            dead = dead_url()

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 300)
                assert ing.client.attempts_log[:2] == [dead, srv.url]
                assert ing.client.stats.connect_failures == 1

            await with_ingestor(srv, check, urls=(dead, srv.url))

    asyncio.run(main())


def test_circuit_breaker_stops_hammering_dead_endpoints() -> None:
    async def main() -> None:
        async with ReplayServer("binance", rate=10, count=1) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: ing.client.breaker.state == "open")
                failures = ing.client.stats.connect_failures
                assert failures == 3
                ok, why = ing.ready()
                assert not ok and why == "circuit open"
                await asyncio.sleep(0.5)
                assert ing.client.stats.connect_failures == failures  # no attempt while open

            await with_ingestor(
                srv,
                check,
                urls=(dead_url(), dead_url()),
                policy=fast_policy(breaker_threshold=3, breaker_cooldown=30.0),
            )

    asyncio.run(main())


def test_proactive_rotation_overlaps_without_loss_or_duplicates() -> None:
    async def main() -> None:
        async with ReplayServer("binance", rate=2000, count=5000) as srv:
            sink = MemorySink()

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 5000 and ing.client.stats.rotations >= 2)

            ing = await with_ingestor(srv, check, sink=sink, policy=fast_policy(rotate_after=0.8))
            assert ing.client.stats.rotations >= 2
            assert ing.client.stats.duplicates > 0  # the overlap really overlapped
            assert ing.client.stats.gaps == 0
            assert_exactly_once(srv, sink)

    asyncio.run(main())


def test_server_shutdown_triggers_rotation() -> None:
    async def main() -> None:
        async with ReplayServer(
            "binance",
            rate=2000,
            count=3000,
            shutdown_grace=1.0,
            faults=[Fault("shutdown", at=1000)],
        ) as srv:
            sink = MemorySink()

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 3000)
                assert ing.client.stats.server_shutdowns == 1
                assert ing.client.stats.rotations == 1

            await with_ingestor(srv, check, sink=sink)
            assert_exactly_once(srv, sink)

    asyncio.run(main())


def test_stale_connection_is_replaced() -> None:
    async def main() -> None:
        async with ReplayServer(
            "kraken", rate=2000, count=2000, faults=[Fault("stall", at=800, arg=30.0)]
        ) as srv:
            sink = MemorySink()

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 2000)
                assert ing.client.stats.stale_reconnects == 1

            await with_ingestor(srv, check, sink=sink, policy=fast_policy(stale_after=0.6))
            assert_exactly_once(srv, sink)

    asyncio.run(main())


def test_kraken_app_level_ping_gets_pong() -> None:
    async def main() -> None:
        async with ReplayServer("kraken", rate=50, count=10_000) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: ing.client.stats.events.get("pong", 0) >= 2)
                assert ing.client.stats.app_pings >= 2

            await with_ingestor(srv, check, policy=fast_policy(app_ping_interval=0.2))

    asyncio.run(main())


def test_server_protocol_pings_are_answered() -> None:
    async def main() -> None:
        async with ReplayServer(
            "binance", rate=20, count=10_000, ping_interval=0.1, ping_timeout=1.0
        ) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await asyncio.sleep(2.5)  # ~25 server pings; an unanswered one drops us after 1 s
                assert ing.client.stats.disconnects == 0 and ing.client.stats.connects == 1
                (conn,) = srv.connections.values()
                assert conn.ws.latency > 0  # the server measured round trips: pongs came back

            await with_ingestor(srv, check, policy=fast_policy(ping_interval=None))

    asyncio.run(main())


def test_gap_is_counted_with_missing_range(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with ReplayServer(
            "binance",
            rate=2000,
            count=1000,
            symbols=["BTC/USDT"],
            faults=[Fault("skip", at=400, arg=25)],
        ) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 975)
                assert ing.client.stats.gaps == 1 and ing.client.stats.missing == 25

            await with_ingestor(srv, check)

    asyncio.run(main())
    assert any("ids 5000000401..5000000425 missing" in r.getMessage() for r in caplog.records)


def test_malformed_frame_goes_to_dead_letter_and_stream_continues() -> None:
    async def main() -> None:
        async with ReplayServer(
            "kraken", rate=2000, count=600, faults=[Fault("malformed", at=300)]
        ) as srv:
            sink = MemorySink()

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 600)
                assert ing.client.stats.parse_errors == 1

            await with_ingestor(srv, check, sink=sink)
            assert len(sink.dead) == 1
            raw, error, headers = sink.dead[0]
            assert (
                raw.startswith(b'{"channel":"trade"')
                and "invalid JSON" in error
                and headers["url"].startswith("ws://")
            )
            assert_exactly_once(srv, sink)

    asyncio.run(main())


def test_slow_sink_applies_backpressure_and_memory_stays_bounded() -> None:
    async def main() -> None:
        async with ReplayServer("binance", rate=20000, count=4000) as srv:
            sink = MemorySink()
            sink.delay = 0.01  # each batch costs 10 ms: Kafka is slow

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 4000, timeout=40)
                assert ing.buffer.blocked_count > 0
                assert ing.buffer.high_water <= ing.buffer.max_items

            await with_ingestor(srv, check, sink=sink, buffer_size=200)
            assert_exactly_once(srv, sink)

    asyncio.run(main())


def test_graceful_shutdown_flushes_everything_buffered() -> None:
    class CountingSink(MemorySink):
        flushed = 0

        def flush(self, timeout: float = 10.0) -> int:
            self.flushed += 1
            return 0

    async def main() -> None:
        async with ReplayServer("binance", rate=20000, count=3000) as srv:
            sink = CountingSink()
            sink.delay = 0.002

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: ing.client.stats.trades >= 1500)

            ing = await with_ingestor(srv, check, sink=sink, buffer_size=100_000)
            assert sink.flushed == 1
            assert len(sink.trades) == ing.client.stats.trades  # nothing left behind in the buffer
            assert ing.buffer.size == 0

    asyncio.run(main())


def test_health_ready_and_metrics_endpoints() -> None:
    def get(url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    async def main() -> None:
        async with ReplayServer("kraken", rate=500, count=100_000) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: len(sink.trades) >= 100 and ing.health is not None)
                assert ing.health is not None
                base = f"http://127.0.0.1:{ing.health.port}"
                assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
                code, body = await asyncio.to_thread(get, base + "/readyz")
                assert code == 200 and "streaming" in body
                code, metrics = await asyncio.to_thread(get, base + "/metrics")
                assert code == 200
                assert 'k2_ingest_trades_total{exchange="kraken"}' in metrics
                assert 'k2_ingest_connected{exchange="kraken"} 1.0' in metrics
                assert "k2_ingest_buffer_capacity" in metrics
                srv.stall(30)
                await wait_for(lambda: not ing.ready()[0], timeout=10)

            await with_ingestor(
                srv,
                check,
                metrics_port=0,
                metrics_host="127.0.0.1",
                policy=fast_policy(stale_after=0.3, backoff_initial=5.0, backoff_max=5.0),
            )

    asyncio.run(main())


def test_flapping_server_opens_the_circuit() -> None:
    """Accepted then closed at once, again and again: counted as failures, the breaker opens."""

    async def main() -> None:
        async with ReplayServer("binance", rate=100, count=10, max_lifetime=0.0) as srv:

            async def check(ing: Ingestor, sink: MemorySink) -> None:
                await wait_for(lambda: ing.client.breaker.state == "open")
                assert ing.client.stats.connects == 3 and ing.client.stats.connect_failures == 0

            await with_ingestor(
                srv, check, policy=fast_policy(breaker_threshold=3, breaker_cooldown=30.0)
            )

    asyncio.run(main())
