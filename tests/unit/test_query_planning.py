"""Pure parts of the gold queries: time ranges -> partition filters, windows, VWAP, output."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.expressions.visitors import expression_evaluator
from pyiceberg.schema import Schema
from pyiceberg.typedef import Record

from k2 import iceberg_ddl
from k2.contracts.tables import GOLD
from k2.gold_queries import (
    DATE_COL,
    HOUR_COL,
    SYMBOL_COL,
    TS_COL,
    TimeRange,
    TradeFilter,
    format_table,
    latest_windows,
    normalize_exchange,
    normalize_symbol,
    parse_time,
    partition_filter,
    vwap_of,
)

UTC = dt.UTC
D0 = dt.date(2025, 6, 2)


def t(day: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime(2025, 6, day, hour, minute, second, micro, tzinfo=UTC)


# ---------------------------------------------------------------- partition pruning, evaluated


def _partition_evaluator(expr: Any) -> Any:
    """How pyiceberg evaluates a filter on a data file's partition tuple (as in DataScan)."""
    from pyiceberg.expressions.visitors import inclusive_projection

    schema = iceberg_ddl.to_iceberg_schema(GOLD)
    spec = iceberg_ddl.to_partition_spec(GOLD, schema)
    projected = inclusive_projection(schema, spec)(expr)
    partition_schema = Schema(*spec.partition_type(schema).fields)
    return expression_evaluator(partition_schema, projected, case_sensitive=True)


def _grid() -> list[tuple[dt.date, int]]:
    return [(D0 + dt.timedelta(days=d), h) for d in range(-1, 4) for h in range(24)]


def _epoch_days(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


@pytest.mark.parametrize(
    "since,until",
    [
        (t(2, 13), t(2, 14)),  # one hour
        (t(2, 13, 15), t(2, 13, 45)),  # inside one hour
        (t(2, 13, 59, 59, 999_999), t(2, 14, 0, 0, 1)),  # straddles an hour by 2 µs
        (t(2, 22, 30), t(3, 1, 30)),  # across midnight
        (t(2, 0), t(3, 0)),  # exactly one day
        (t(1, 23), t(4, 1)),  # partial, two full days, partial
        (t(2, 5), t(4, 0)),  # partial then a full day
    ],
)
def test_partition_filter_selects_exactly_the_touched_hours(
    since: dt.datetime, until: dt.datetime
) -> None:
    tr = TimeRange(since, until)
    evaluate = _partition_evaluator(TradeFilter(tr, "BTC/USDT").iceberg())
    selected = {(d, h) for d, h in _grid() if evaluate(Record(_epoch_days(d), h))}
    assert selected == set(tr.partitions())


def test_partitions_of_a_range() -> None:
    assert TimeRange(t(2, 13, 15), t(2, 13, 45)).partitions() == [(D0, 13)]
    assert TimeRange(t(2, 13), t(2, 15)).partitions() == [(D0, 13), (D0, 14)]  # until is exclusive
    assert TimeRange(t(2, 23, 30), t(3, 0, 0, 0, 1)).partitions() == [
        (D0, 23),
        (D0 + dt.timedelta(days=1), 0),
    ]
    assert len(TimeRange.day(D0).partitions()) == 24


def test_partition_filter_shape_uses_in_for_whole_days() -> None:
    text = repr(partition_filter(TimeRange(t(1, 23), t(4, 1))))
    assert "In(" in text and text.count("EqualTo(term=Reference(name='exchange_date')") == 2


def test_time_range_validation_and_utc() -> None:
    with pytest.raises(ValueError, match="empty time range"):
        TimeRange(t(2, 1), t(2, 1))
    naive = TimeRange(dt.datetime(2025, 6, 2, 1), dt.datetime(2025, 6, 2, 2))
    assert naive.since.tzinfo is not None and naive.since == t(2, 1)
    cet = dt.timezone(dt.timedelta(hours=2))
    assert TimeRange(dt.datetime(2025, 6, 2, 3, tzinfo=cet), t(2, 2)).since == t(2, 1)
    assert TimeRange(t(2, 0), t(2, 1)).hour_aligned
    assert not TimeRange(t(2, 0, 1), t(2, 1)).hour_aligned


def test_trade_filter_renders_sql_and_iceberg_consistently() -> None:
    tr = TimeRange(t(2, 13, 15), t(2, 13, 45))
    f = TradeFilter(tr, "BTC/USDT", "KRAKEN")
    where, params = f.sql()
    assert where == f'"{TS_COL}" >= ? AND "{TS_COL}" < ? AND "{SYMBOL_COL}" = ? AND "exchange" = ?'
    assert params == [tr.since, tr.until, "BTC/USDT", "KRAKEN"]
    text = repr(f.iceberg())
    for needle in (DATE_COL, HOUR_COL, TS_COL, "BTC/USDT", "KRAKEN"):
        assert needle in text
    # Hour-aligned ranges need no timestamp predicate in SQL: the partitions are exact.
    where, params = TradeFilter(TimeRange(t(2, 13), t(2, 15)), "BTC/USDT").sql()
    assert where == f'"{SYMBOL_COL}" = ?' and params == ["BTC/USDT"]
    assert TradeFilter(TimeRange(t(2, 13), t(2, 15))).sql() == ("true", [])


def test_columns_come_from_the_gold_contract() -> None:
    names = GOLD.column_names()
    assert {DATE_COL, HOUR_COL, TS_COL, SYMBOL_COL} <= set(names)
    assert tuple(p.source for p in GOLD.partition_by) == (DATE_COL, HOUR_COL)


# ---------------------------------------------------------------- latest: widening windows


def test_latest_windows_start_with_the_newest_hour_and_double() -> None:
    windows = latest_windows(t(2, 23), t(2, 0))
    assert windows[0] == TimeRange(t(2, 23), t(3, 0))
    widths = [int((w.until - w.since).total_seconds() // 3600) for w in windows]
    assert widths == [1, 1, 2, 4, 8, 8]  # the last one clipped at the oldest hour
    for newer, older in itertools.pairwise(windows):
        assert older.until == newer.since  # disjoint, contiguous, going back
    assert windows[-1].since == t(2, 0)


def test_latest_windows_single_hour() -> None:
    assert latest_windows(t(2, 5), t(2, 5)) == [TimeRange(t(2, 5), t(2, 6))]


# ---------------------------------------------------------------- values


def test_vwap_is_exact_and_rounded_half_even_to_the_price_scale() -> None:
    notional = Decimal("100.00000001") * Decimal("3") + Decimal("100.00000002") * Decimal("1")
    volume = Decimal("4")
    assert vwap_of(notional, volume) == Decimal("100.00000001")  # 400.00000005/4 = 100.0000000125
    assert vwap_of(Decimal("0.000000025"), Decimal("1")) == Decimal("0.00000002")  # half-even
    assert vwap_of(Decimal("0.000000035"), Decimal("1")) == Decimal("0.00000004")
    assert vwap_of(Decimal(0), Decimal(0)) is None


def test_symbols_and_exchanges_are_normalised() -> None:
    assert normalize_symbol(" btc/usdt ") == "BTC/USDT"
    assert normalize_symbol("XBT/USD") == "BTC/USD"
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        normalize_symbol("BTCUSDT")
    assert normalize_exchange("kraken") == "KRAKEN"
    assert normalize_exchange(None) is None
    with pytest.raises(ValueError, match="unknown exchange"):
        normalize_exchange("coinbase")


def test_parse_time() -> None:
    assert parse_time("2025-06-02T13:00") == t(2, 13)
    assert parse_time("2025-06-02T13:00:00Z") == t(2, 13)
    assert parse_time("2025-06-02T15:00:00+02:00") == t(2, 13)
    assert parse_time("2025-06-02") == t(2, 0)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_format_table_aligns_and_right_aligns_numbers() -> None:
    out = format_table(
        ["symbol", "price", "n"],
        [("BTC/USDT", Decimal("67000.50000000"), 3), ("ETH/USDT", None, 12)],
    )
    lines = out.splitlines()
    assert lines[0] == "symbol      price   n"
    assert lines[1] == "--------  -------  --"
    assert lines[2] == "BTC/USDT  67000.5   3"
    assert lines[3] == "ETH/USDT           12"
    assert format_table(["a"], []) == "a\n-"


# ---------------------------------------------------------------- CLI plumbing (no catalog)


def test_catalog_endpoint_from_flags_and_stack_json(tmp_path: Path) -> None:
    from k2.query import QueryError, catalog_endpoint

    assert catalog_endpoint("http://127.0.0.1:1", "file:///w") == (
        "http://127.0.0.1:1",
        "file:///w",
    )
    with pytest.raises(QueryError, match="--warehouse"):
        catalog_endpoint("http://127.0.0.1:1", None)
    with pytest.raises(QueryError, match="k2 stack up"):
        catalog_endpoint(None, None, tmp_path)
    (tmp_path / "stack.json").write_text(json.dumps({"kafka": {"bootstrap_servers": "x"}}))
    with pytest.raises(QueryError, match="no catalog running"):
        catalog_endpoint(None, None, tmp_path)
    (tmp_path / "stack.json").write_text(
        json.dumps({"catalog": {"uri": "http://h:1", "warehouse": "file:///wh"}})
    )
    assert catalog_endpoint(None, None, tmp_path) == ("http://h:1", "file:///wh")


def test_time_range_arguments() -> None:
    import argparse

    from k2.query import QueryError, time_range_from_args

    def ns(**kw: Any) -> argparse.Namespace:
        return argparse.Namespace(**{"date": None, "since": None, "until": None, **kw})

    assert time_range_from_args(ns(), t(3, 0)) is None
    assert time_range_from_args(ns(date="2025-06-02"), None) == TimeRange.day(D0)
    assert time_range_from_args(ns(since="2025-06-02T10:00"), t(2, 12)) == TimeRange(
        t(2, 10), t(2, 12)
    )
    assert time_range_from_args(ns(until="2025-06-02T10:00"), None) == TimeRange(t(2, 9), t(2, 10))
    with pytest.raises(QueryError, match="either --date"):
        time_range_from_args(ns(date="2025-06-02", since="2025-06-02T10:00"), None)
    with pytest.raises(QueryError, match="YYYY-MM-DD"):
        time_range_from_args(ns(date="june"), None)
    with pytest.raises(QueryError, match="empty time range"):
        time_range_from_args(ns(since="2025-06-02T10:00", until="2025-06-02T09:00"), None)


def test_query_parser_accepts_every_query() -> None:
    import argparse

    from k2.query import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    a = parser.parse_args(["latest", "--symbol", "BTC/USDT", "--limit", "5", "--json"])
    assert (a.query_command, a.symbol, a.limit, a.json) == ("latest", "BTC/USDT", 5, True)
    a = parser.parse_args(
        ["ohlcv", "--symbol", "ETH/USDT", "--interval", "5m", "--date", "2025-06-02"]
    )
    assert (a.interval, a.date) == ("5m", "2025-06-02")
    a = parser.parse_args(
        [
            "vwap",
            "--symbol",
            "ETH/USDT",
            "--since",
            "2025-06-02T10:00",
            "--until",
            "2025-06-02T11:00",
        ]
    )
    assert a.since == "2025-06-02T10:00"
    a = parser.parse_args(
        ["counts", "--date", "2025-06-02", "--catalog-uri", "http://x", "--warehouse", "w"]
    )
    assert a.catalog_uri == "http://x"
    with pytest.raises(SystemExit):
        parser.parse_args(["ohlcv", "--symbol", "BTC/USDT", "--interval", "2m"])
