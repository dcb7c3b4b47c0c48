"""Ingestor configuration (defaults, K2_* env, flags), the CLI, and the JSON-lines sink."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
from decimal import Decimal

import pytest

from k2.pipeline import ExchangeFeed
from k2_ingestors import cli
from k2_ingestors.app import Ingestor
from k2_ingestors.config import (
    BinanceConfig,
    KrakenConfig,
    config_for,
    config_from_feed,
    ingest_argv,
)
from k2_ingestors.exchanges import KrakenAdapter
from k2_ingestors.replay.server import ReplayServer
from k2_ingestors.sink import JsonlSink, MemorySink, producer_config
from k2_ingestors.wsclient import ClientPolicy

pytestmark = pytest.mark.timeout(60)


def test_defaults_per_exchange() -> None:
    b, k = config_for("binance", env={}), config_for("kraken", env={})
    assert isinstance(b, BinanceConfig) and isinstance(k, KrakenConfig)
    assert b.symbols == ("BTC/USDT", "ETH/USDT") and k.symbols == ("BTC/USD", "ETH/USD")
    assert b.topic == "market.crypto.trades.binance" and k.topic == "market.crypto.trades.kraken"
    assert b.endpoint_urls()[0].startswith("wss://stream.binance.com") and k.endpoint_urls() == (
        "wss://ws.kraken.com/v2",
    )
    assert b.dead_letter_topic == "market.crypto.trades.deadletter"


def test_env_then_overrides() -> None:
    env = {
        "K2_SYMBOLS": "SOL/USDT",
        "K2_BINANCE_URLS": "ws://a/stream, ws://b/stream",
        "K2_SINK": "jsonl",
        "K2_METRICS_PORT": "9100",
        "K2_ROTATE_AFTER": "3600",
        "K2_BREAKER_THRESHOLD": "4",
        "K2_BINANCE_STREAM": "aggTrade",
    }
    c = config_for("binance", env=env, metrics_port=None)
    assert c.symbols == ("SOL/USDT",) and c.urls == ("ws://a/stream", "ws://b/stream")
    assert c.sink == "jsonl" and c.metrics_port == 9100
    assert c.policy.rotate_after == 3600.0 and c.policy.breaker_threshold == 4
    assert c.adapter().stream_names() == ["solusdt@aggTrade"]  # type: ignore[attr-defined]
    assert config_for("binance", env=env, symbols=("BTC/USDT",)).symbols == ("BTC/USDT",)
    assert config_for("kraken", env={"K2_KRAKEN_SNAPSHOT": "true"}).adapter().snapshot  # type: ignore[attr-defined]


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError, match="canonical"):
        config_for("binance", env={}, symbols=("btcusdt",))
    with pytest.raises(ValueError, match="sink"):
        config_for("binance", env={}, sink="s3")
    with pytest.raises(ValueError, match="unknown exchange"):
        config_for("coinbase", env={})


def test_feed_to_config_and_argv() -> None:
    feed = ExchangeFeed(
        name="k",
        exchange="KRAKEN",
        symbols=("BTC/USD",),
        topic="t.kraken",
        endpoint="ws://127.0.0.1:1/v2",
    )
    c = config_from_feed(feed, "127.0.0.1:9092", "http://r", metrics_port=0)
    assert (
        c.symbols == ("BTC/USD",) and c.urls == ("ws://127.0.0.1:1/v2",) and c.topic == "t.kraken"
    )
    argv = ingest_argv(c, python="py")
    assert argv[:4] == ["py", "-m", "k2_ingestors.cli", "kraken"] and "--metrics-port" in argv


def test_cli_arguments_map_to_config() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "binance",
            "--symbols",
            "BTC/USDT",
            "--url",
            "ws://x/stream",
            "--url",
            "ws://y/stream",
            "--sink",
            "jsonl",
            "--stale-after",
            "5",
        ]
    )
    c = cli.config_from_args(args)
    assert (
        c.urls == ("ws://x/stream", "ws://y/stream")
        and c.sink == "jsonl"
        and c.policy.stale_after == 5.0
    )


def test_producer_is_idempotent_acks_all_compressed() -> None:
    conf = producer_config("127.0.0.1:9092")
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["compression.type"] in ("lz4", "zstd") and conf["linger.ms"] > 0


def test_jsonl_sink_writes_v3_records() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    sink = JsonlSink(out, err)
    (t,) = KrakenAdapter(["BTC/USD"]).parse(
        b'{"channel":"trade","data":[{"symbol":"BTC/USD","side":"buy","price":0.1,"qty":2,"trade_id":1,"timestamp":"2026-03-15T11:26:23Z"}]}',
        5,
    )  # type: ignore[misc]
    sink.send([t])
    sink.dead_letter(b"{bad", "invalid JSON", {"url": "ws://x"})
    rec = json.loads(out.getvalue())
    assert (
        rec["price"] == "0.10000000"
        and rec["quantity"] == "2.00000000"
        and rec["timestamp"] == 1773573983000000
    )
    assert Decimal(rec["price"]) == Decimal("0.1")
    assert json.loads(err.getvalue())["error"] == "invalid JSON"


def test_kraken_v1_endpoint_end_to_end_with_rotation() -> None:
    async def main() -> None:
        async with ReplayServer("kraken", rate=2000, count=3000) as srv:
            sink = MemorySink()
            cfg = config_for("kraken", env={}, urls=(srv.v1_url,), sink="jsonl")
            cfg.policy = ClientPolicy(
                rotate_after=0.6, backoff_initial=0.05, overlap_timeout=2.0, close_timeout=0.5
            )
            ing = Ingestor(cfg, sink=sink)
            task = asyncio.get_running_loop().create_task(ing.run())
            for _ in range(400):
                if len(sink.trades) >= 3000:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            ing.stop()
            await task
            assert ing.client.stats.rotations >= 1
            assert len(sink.trades) == 3000 == len({t["message_id"] for t in sink.trades})
            assert {t["vendor_data"]["native_symbol"] for t in sink.trades} == {
                "XBT/USD",
                "ETH/USD",
            }

    asyncio.run(main())


def test_k2_ingest_jsonl_subprocess() -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k2_ingestors.replay.cli",
            "binance",
            "--rate",
            "500",
            "--count",
            "40",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        url = json.loads(server.stdout.readline())["url"]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "k2_ingestors.cli",
                "binance",
                "--url",
                url,
                "--sink",
                "jsonl",
                "--log-level",
                "ERROR",
            ],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(40)]
        proc.terminate()  # SIGTERM: graceful
        assert proc.wait(20) == 0
        assert [r["trade_id"] for r in lines if r["symbol"] == "BTC/USDT"] == [
            str(5000000001 + i) for i in range(20)
        ]
    finally:
        server.terminate()
        server.wait(10)
