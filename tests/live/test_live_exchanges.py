"""Real exchanges, a few seconds each (needs the internet; opt in with --run-live or K2_LIVE=1)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from k2_ingestors.app import Ingestor
from k2_ingestors.config import config_for
from k2_ingestors.sink import MemorySink

pytestmark = [pytest.mark.live, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    ("exchange", "symbols"),
    [("binance", ("BTC/USDT", "ETH/USDT")), ("kraken", ("BTC/USD", "ETH/USD"))],
)
def test_live_exchange_streams_valid_trades(exchange: str, symbols: tuple[str, ...]) -> None:
    sink = MemorySink()
    ingestor = Ingestor(config_for(exchange, env={}, symbols=symbols, sink="jsonl"), sink=sink)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(ingestor.run())
        deadline = time.monotonic() + 60
        while (
            len(sink.trades) < 5 or time.monotonic() < deadline - 50
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        ingestor.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(main())
    stats = ingestor.client.stats
    assert stats.connects >= 1 and stats.parse_errors == 0
    assert len(sink.trades) >= 5, f"only {len(sink.trades)} trades in 60 s from {exchange}"
    now_us = time.time_ns() // 1000
    for t in sink.trades:
        assert t["symbol"] in symbols
        assert t["exchange"] == exchange.upper()
        assert isinstance(t["price"], Decimal) and t["price"] > 0 and t["quantity"] > 0
        assert abs(now_us - t["timestamp"]) < 600 * 1_000_000
        assert t["message_id"].startswith(f"{exchange.upper()}:")
        assert t["vendor_data"]["native_symbol"]
    if exchange == "kraken":
        assert stats.events.get("subscribed", 0) == len(symbols)  # one ack per symbol
