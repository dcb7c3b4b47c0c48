"""The gold fixture generator: shaped like GOLD, sorted, realistic, deterministic."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2 import iceberg_ddl
from k2.contracts.tables import GOLD
from k2.contracts.trade import EXCHANGES, SIDES, message_id, to_decimal
from k2.gold_fixture import MARKETS, FixtureParams, default_days, generate_hours, trades_table

UTC = dt.UTC


@pytest.fixture(scope="module")
def schema() -> pa.Schema:
    return iceberg_ddl.to_iceberg_schema(GOLD).as_arrow()


@pytest.fixture(scope="module")
def hours(schema: pa.Schema) -> list[pa.Table]:
    return list(generate_hours(schema, FixtureParams(20_000, default_days(1), seed=3)))


def test_one_table_per_hour_with_the_gold_schema(schema: pa.Schema, hours: list[pa.Table]) -> None:
    assert len(hours) == 24
    assert sum(h.num_rows for h in hours) == 20_000
    for h in hours:
        assert h.schema.equals(schema)


def test_rows_sorted_by_the_gold_sort_order_and_partition_columns_match(
    hours: list[pa.Table],
) -> None:
    sort = [(s.source, "ascending") for s in GOLD.sort_by]
    for i, h in enumerate(hours):
        assert pc.all(
            pc.equal(pc.sort_indices(h, sort), pa.array(range(h.num_rows), pa.uint64()))
        ).as_py()
        ts = h.column("timestamp")
        assert pc.all(pc.equal(pc.hour(ts), h.column("exchange_hour"))).as_py()
        assert set(h.column("exchange_hour").to_pylist()) == {i}
        assert set(h.column("exchange_date").to_pylist()) == {dt.date(2025, 6, 2)}


def test_values_are_realistic_and_fit_the_contract(hours: list[pa.Table]) -> None:
    table = pa.concat_tables(hours)
    rows = table.slice(0, 2000).to_pylist()
    markets = {(m.exchange, m.symbol): m for m in MARKETS}
    for r in rows:
        m = markets[(r["exchange"], r["symbol"])]
        assert r["price"] > 0 and r["quantity"] > 0
        assert to_decimal(r["price"], "price") == r["price"]
        assert r["price"] == r["price"].quantize(Decimal(1).scaleb(-m.price_decimals))
        assert abs(float(r["price"]) / m.price - 1) < 0.2
        assert r["message_id"] == message_id(m.exchange, m.native_symbol, r["trade_id"])
        assert r["side"] in SIDES and r["exchange"] in EXCHANGES
        assert dict(r["vendor_data"])["native_symbol"] == m.native_symbol
        assert (r["base_asset"], r["quote_currency"]) == tuple(m.symbol.split("/"))
        assert r["ingestion_timestamp"] > r["timestamp"]
    # unique message ids, sequential trade ids per market
    assert pc.count_distinct(table.column("message_id")).as_py() == table.num_rows
    ids = [
        int(i)
        for i in table.filter(pc.equal(table.column("symbol"), "ETH/USD"))
        .column("trade_id")
        .to_pylist()
    ]
    assert sorted(ids) == list(range(min(ids), min(ids) + len(ids)))  # no gaps, no repeats
    both = set(table.column("exchange").unique().to_pylist())
    assert both == set(EXCHANGES)


def test_deterministic_for_a_seed(schema: pa.Schema) -> None:
    params = FixtureParams(2_000, default_days(1), seed=11)
    a = pa.concat_tables(generate_hours(schema, params))
    b = pa.concat_tables(generate_hours(schema, params))
    assert a.equals(b)
    c = pa.concat_tables(generate_hours(schema, FixtureParams(2_000, default_days(1), seed=12)))
    assert not a.equals(c)


def test_trades_table_derives_the_pipeline_columns(schema: pa.Schema) -> None:
    ts = dt.datetime(2025, 6, 2, 23, 59, 59, 999_999, tzinfo=UTC)
    table = trades_table(
        schema,
        [
            {
                "exchange": "KRAKEN",
                "symbol": "BTC/USD",
                "trade_id": 7,
                "timestamp": ts,
                "price": "1.5",
                "quantity": "2",
            },
            {
                "exchange": "BINANCE",
                "symbol": "BTC/USDT",
                "trade_id": 5,
                "timestamp": ts - dt.timedelta(hours=1),
                "price": Decimal("67000.12345678"),
                "quantity": "0.001",
                "side": "SELL",
            },
        ],
    )
    first, second = table.to_pylist()
    assert (
        first["message_id"] == "BINANCE:BTCUSDT:5"
        and first["exchange_hour"] == 22
        and first["side"] == "SELL"
    )
    assert second["message_id"] == "KRAKEN:BTC/USD:7" and second["exchange_hour"] == 23
    assert second["exchange_date"] == dt.date(2025, 6, 2) and second["price"] == Decimal("1.5")
    assert table.schema.equals(schema)
