"""Ingestors against the real local Kafka broker and Apicurio registry.

For each exchange: N trades served by the replay server -> exactly N records in the
topic, deserializable as trade v3, in order per symbol; the same through forced
disconnects, a stall, a serverShutdown and rotations; malformed frames (and trades
whose decimals do not fit) land in the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from k2.contracts import serde
from k2_ingestors.app import Ingestor
from k2_ingestors.config import config_for
from k2_ingestors.replay.server import Fault, ReplayServer
from k2_ingestors.wsclient import ClientPolicy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def policy(**over: Any) -> ClientPolicy:
    p = ClientPolicy(
        backoff_initial=0.05,
        backoff_max=0.3,
        healthy_after=0.5,
        open_timeout=3.0,
        close_timeout=0.5,
        overlap_timeout=3.0,
    )
    for k, v in over.items():
        setattr(p, k, v)
    return p


def consume(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0, settle: float = 2.0
) -> list[Any]:
    """Every message of `topic` (all partitions), waiting until `expected` arrived and a quiet `settle`."""
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(5000, 0.5)
            real = [m for m in msgs if m.error() is None]
            out += real
            if len(out) >= expected:
                if real:
                    quiet_since = time.monotonic()
                elif quiet_since is not None and time.monotonic() - quiet_since > settle:
                    break
                elif quiet_since is None:
                    quiet_since = time.monotonic()
    finally:
        c.close()
    return out


async def ingest(
    server: ReplayServer,
    kafka: dict[str, Any],
    registry: dict[str, Any],
    topic: str,
    dlq: str,
    until: int,
    pol: ClientPolicy | None = None,
    **cfg: Any,
) -> Ingestor:
    config = config_for(
        server.exchange,
        env={},
        urls=(server.url,),
        symbols=server.tape.symbols if server.tape else cfg.pop("symbols"),
        bootstrap_servers=kafka["bootstrap_servers"],
        schema_registry_url=registry["url"],
        topic=topic,
        dead_letter_topic=dlq,
        **cfg,
    )
    config.policy = pol or policy()
    ing = Ingestor(config)
    task = asyncio.get_running_loop().create_task(ing.run())
    deadline = time.monotonic() + 120
    while ing.client.stats.trades < until and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    ing.stop()
    await asyncio.wait_for(task, 60)
    return ing


def names(exchange: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"it.{tag}.trades.{exchange}", f"it.{tag}.deadletter"


def check_topic(
    kafka: dict[str, Any], registry: dict[str, Any], topic: str, server: ReplayServer
) -> list[dict[str, Any]]:
    expected = server.expected_trades()
    msgs = consume(kafka["bootstrap_servers"], topic, len(expected))
    de = serde.TradeDeserializer(serde.registry_client(registry["url"]))
    records = [de(m.value()) for m in msgs]
    assert len(records) == len(expected), (
        f"{len(records)} records for {len(expected)} trades served"
    )
    assert len({r["message_id"] for r in records}) == len(expected)
    by_id = {(r["symbol"], r["trade_id"]): r for r in records}
    for t in expected:
        r = by_id[(t.symbol, str(t.trade_id))]
        assert (
            r["price"] == Decimal(t.price)
            and r["quantity"] == Decimal(t.qty)
            and r["side"] == t.side
        )
        assert r["exchange"] == server.exchange.upper()
    for m, r in zip(msgs, records, strict=True):
        assert m.key() == r["symbol"].encode()  # keyed by canonical symbol
    # in order per symbol: one symbol -> one partition, offsets follow trade ids
    per_symbol: dict[str, list[tuple[int, int]]] = {}
    for m, r in zip(msgs, records, strict=True):
        per_symbol.setdefault(r["symbol"], []).append((m.offset(), int(r["trade_id"])))
    for rows in per_symbol.values():
        ids = [tid for _, tid in sorted(rows)]
        assert ids == sorted(ids)
    return records


@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_every_served_trade_lands_exactly_once(
    exchange: str, kafka: dict[str, Any], registry: dict[str, Any]
) -> None:
    topic, dlq = names(exchange)
    n = 5000

    async def main() -> ReplayServer:
        async with ReplayServer(exchange, rate=5000, count=n, seed=21) as srv:
            ing = await ingest(srv, kafka, registry, topic, dlq, n)
            assert ing.sink.stats.delivered == n and ing.sink.stats.delivery_errors == 0
            return srv

    srv = asyncio.run(main())
    assert srv.expected_count() == n
    records = check_topic(kafka, registry, topic, srv)
    r = records[0]
    assert set(r) == {
        "message_id",
        "trade_id",
        "symbol",
        "exchange",
        "timestamp",
        "price",
        "quantity",
        "base_asset",
        "quote_currency",
        "side",
        "ingestion_timestamp",
        "vendor_data",
    }
    assert r["vendor_data"]["native_symbol"]


@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_no_loss_through_disconnects_stall_shutdown_and_rotation(
    exchange: str, kafka: dict[str, Any], registry: dict[str, Any]
) -> None:
    topic, dlq = names(exchange)
    n = 24_000
    # the stall comes soon after a reconnect, so staleness (0.4 s) beats the 1.5 s rotation timer
    faults = [
        Fault("drop", at=2000),
        Fault("stall", at=2400, arg=30.0),
        Fault("shutdown", at=11_000),
        Fault("drop", at=22_000),
    ]

    async def main() -> tuple[ReplayServer, Ingestor]:
        async with ReplayServer(
            exchange, rate=4000, count=n, faults=faults, shutdown_grace=0.5
        ) as srv:
            ing = await ingest(
                srv, kafka, registry, topic, dlq, n, policy(stale_after=0.4, rotate_after=1.5)
            )
            return srv, ing

    srv, ing = asyncio.run(main())
    s = ing.client.stats
    assert srv.drops == 2 and srv.shutdowns_sent == 1
    assert s.disconnects >= 2 and s.stale_reconnects == 1 and s.rotations >= 2
    if exchange == "binance":
        assert s.server_shutdowns == 1  # serverShutdown -> overlapped rotation
    else:
        assert (
            s.events["status"] >= 2
        )  # Kraken announces maintenance on the status channel, then closes
    assert s.gaps == 0
    check_topic(kafka, registry, topic, srv)


def test_malformed_frames_land_in_dead_letter_topic(
    kafka: dict[str, Any], registry: dict[str, Any]
) -> None:
    topic, dlq = names("binance")
    n = 2000

    async def main() -> ReplayServer:
        async with ReplayServer(
            "binance",
            rate=4000,
            count=n,
            faults=[Fault("malformed", at=500), Fault("malformed", at=1500)],
        ) as srv:
            await ingest(srv, kafka, registry, topic, dlq, n)
            return srv

    srv = asyncio.run(main())
    check_topic(kafka, registry, topic, srv)
    dead = consume(kafka["bootstrap_servers"], dlq, 2)
    assert len(dead) == 2
    for m in dead:
        headers = dict(m.headers())
        assert b"invalid JSON" in headers["error"] and headers["exchange"] == b"BINANCE"
        assert m.value().startswith(b'{"stream":"btcusdt@trade"')


def test_undecodable_decimal_goes_to_dead_letter_but_invalid_price_does_not(
    tmp_path: Path, kafka: dict[str, Any], registry: dict[str, Any]
) -> None:
    topic, dlq = names("kraken")

    def frame(tid: int, price: str) -> str:
        return f'{{"channel":"trade","type":"update","data":[{{"symbol":"BTC/USD","side":"buy","price":{price},"qty":0.5,"ord_type":"limit","trade_id":{tid},"timestamp":"2026-03-15T11:26:23.000001Z"}}]}}'

    capture = tmp_path / "frames.jsonl"
    capture.write_text(
        "\n".join(
            [frame(1, "60000.1"), frame(2, "0"), frame(3, "123456789012.5"), frame(4, "-3.25")]
        )
        + "\n"
    )

    async def main() -> None:
        async with ReplayServer("kraken", capture=capture, rate=100) as srv:
            await ingest(srv, kafka, registry, topic, dlq, 3, symbols=("BTC/USD",))

    asyncio.run(main())
    de = serde.TradeDeserializer(serde.registry_client(registry["url"]))
    records = [de(m.value()) for m in consume(kafka["bootstrap_servers"], topic, 3)]
    assert sorted((r["trade_id"], r["price"]) for r in records) == [
        ("1", Decimal("60000.1")),
        ("2", Decimal("0")),
        ("4", Decimal("-3.25")),
    ]
    dead = consume(kafka["bootstrap_servers"], dlq, 1)
    assert len(dead) == 1
    assert b"does not fit" in dict(dead[0].headers())["error"]
    assert orjson.loads(dead[0].value())["data"][0]["trade_id"] == 3
