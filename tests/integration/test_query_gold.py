"""`k2 query` against the real Iceberg REST catalog: known trades, exact answers, pruning.

A small gold table (the GOLD spec in a throwaway namespace) gets hand-written trades in
five hour partitions around midnight, one commit per hour (hour 22 has two files).
Every query's answer is compared with a plain-Python reference over the same trades
(Decimal arithmetic), and the planned scans with the files of the expected hours.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import json
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest

from k2 import iceberg_ddl
from k2.catalog import load_catalog
from k2.contracts.tables import GOLD
from k2.gold_fixture import gold_arrow_schema, trades_table
from k2.gold_queries import GoldReader, GoldTableMissing, TimeRange, TradeFilter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

UTC = dt.UTC
D = dt.date(2025, 6, 2)
D1 = dt.date(2025, 6, 3)


def at(day: dt.date, h: int, m: int = 0, s: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, h, m, s, us, tzinfo=UTC)


def trade(
    ex: str, sym: str, tid: int, ts: dt.datetime, price: str, qty: str, side: str = "BUY"
) -> dict[str, Any]:
    return {
        "exchange": ex,
        "symbol": sym,
        "trade_id": str(tid),
        "timestamp": ts,
        "price": Decimal(price),
        "quantity": Decimal(qty),
        "side": side,
    }


B, K = "BINANCE", "KRAKEN"
# name -> trade; ties on purpose: b1/b2 share a microsecond (open of 22:00), b4/b5 too (close of 22:01).
T = {
    "e1": trade(B, "ETH/USDT", 200, at(D, 21, 15), "3500.00", "2.0"),
    "e2": trade(B, "ETH/USDT", 201, at(D, 21, 45), "3501.50", "1.0", "SELL"),
    "k1": trade(K, "BTC/USDT", 9001, at(D, 22, 0, 5), "66995.5", "0.12345678"),
    "b1": trade(B, "BTC/USDT", 100, at(D, 22, 0, 10), "67000.00", "0.5"),
    "b2": trade(B, "BTC/USDT", 101, at(D, 22, 0, 10), "67001.00", "0.25", "SELL"),
    "b3": trade(B, "BTC/USDT", 102, at(D, 22, 0, 40, 500_000), "66990.50", "1.0"),
    "b4": trade(B, "BTC/USDT", 103, at(D, 22, 1, 59, 999_999), "67010.12345678", "0.00000001"),
    "b5": trade(B, "BTC/USDT", 104, at(D, 22, 1, 59, 999_999), "67005.00", "0.1", "SELL"),
    "k2": trade(K, "BTC/USDT", 9002, at(D, 22, 3), "67003.1", "0.5", "SELL"),
    "b6": trade(B, "BTC/USDT", 105, at(D, 22, 7), "67020", "0.2"),  # second file of hour 22
    "k3": trade(K, "BTC/USD", 5001, at(D, 23, 10), "67050.0", "1.5"),
    "b7": trade(B, "BTC/USDT", 106, at(D, 23, 30), "67100", "0.3"),
    "b8": trade(B, "BTC/USDT", 107, at(D1, 0, 0), "67200", "0.4"),
    "b9": trade(B, "BTC/USDT", 108, at(D1, 0, 59, 59, 999_999), "67150.5", "0.6", "SELL"),
}
COMMITS = [
    ["e1", "e2"],
    ["k1", "b1", "b2", "b3", "b4", "b5", "k2"],
    ["b6"],
    ["k3", "b7"],
    ["b8", "b9"],
]


# ---------------------------------------------------------------- reference implementations


def _select(
    tr: TimeRange, symbol: str | None = None, exchange: str | None = None
) -> list[dict[str, Any]]:
    return [
        t
        for t in T.values()
        if tr.since <= t["timestamp"] < tr.until
        and (symbol is None or t["symbol"] == symbol)
        and (exchange is None or t["exchange"] == exchange)
    ]


def ref_ohlcv(
    symbol: str, step: int, tr: TimeRange, exchange: str | None = None
) -> list[tuple[Any, ...]]:
    bars: dict[tuple[dt.datetime, str], list[dict[str, Any]]] = {}
    for t in _select(tr, symbol, exchange):
        epoch = int(t["timestamp"].timestamp())
        bucket = dt.datetime.fromtimestamp(epoch - epoch % step, UTC)
        bars.setdefault((bucket, t["exchange"]), []).append(t)
    out = []
    for (bucket, ex), ts in sorted(bars.items()):
        ts.sort(key=lambda t: (t["timestamp"], t["trade_id"]))
        prices = [t["price"] for t in ts]
        out.append(
            (
                bucket,
                ex,
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
                sum(t["quantity"] for t in ts),
                len(ts),
            )
        )
    return out


def ref_vwap(symbol: str, tr: TimeRange) -> dict[str, tuple[Decimal, Decimal, Decimal, int]]:
    acc: dict[str, list[Any]] = {}
    for t in _select(tr, symbol):
        for key in (t["exchange"], "ALL"):
            a = acc.setdefault(key, [Decimal(0), Decimal(0), 0])
            a[0] += t["price"] * t["quantity"]
            a[1] += t["quantity"]
            a[2] += 1
    if len(acc) == 2:  # one exchange: no ALL row
        acc.pop("ALL")
    q = Decimal("0.00000001")
    return {
        k: ((n / v).quantize(q, rounding=ROUND_HALF_EVEN), v, n, c) for k, (n, v, c) in acc.items()
    }


def partition_of(task: Any) -> tuple[dt.date, int]:
    day, hour = task.file.partition[0], task.file.partition[1]
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day) if isinstance(day, int) else day), hour


def latest_names(result: Any) -> list[str]:
    by_key = {(t["exchange"], t["trade_id"]): name for name, t in T.items()}
    return [by_key[(r["exchange"], r["trade_id"])] for r in result.records()]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gold(catalog: dict[str, Any]) -> Iterator[dict[str, Any]]:
    cat = load_catalog(catalog["uri"], catalog["warehouse"])
    spec = dataclasses.replace(GOLD, namespace=f"k2_test_query_{uuid.uuid4().hex[:8]}")
    iceberg_ddl.apply(cat, iceberg_ddl.plan_in(cat, spec))
    table = cat.load_table(spec.identifier)
    schema = gold_arrow_schema(table)
    for names in COMMITS:
        table.append(trades_table(schema, [T[n] for n in names]))
    yield {
        "catalog": cat,
        "identifier": spec.identifier,
        "table": cat.load_table(spec.identifier),
        **catalog,
    }
    iceberg_ddl.drop(cat, spec.identifier, purge=True)


@pytest.fixture(scope="module", params=["auto", "arrow"])
def reader(request: pytest.FixtureRequest, gold: dict[str, Any]) -> GoldReader:
    """Both read paths: DuckDB on the planned files, and pyiceberg's ArrowScan."""
    return GoldReader(gold["catalog"].load_table(gold["identifier"]), read_path=request.param)


# ---------------------------------------------------------------- pruning


def test_planned_scans_touch_only_the_files_of_the_range_hours(gold: dict[str, Any]) -> None:
    table = gold["table"]
    assert len(list(table.scan().plan_files())) == 5

    def planned(tr: TimeRange, symbol: str | None = "BTC/USDT") -> list[tuple[dt.date, int]]:
        tasks = table.scan(row_filter=TradeFilter(tr, symbol).iceberg()).plan_files()
        return sorted(partition_of(t) for t in tasks)

    assert planned(TimeRange(at(D, 22), at(D, 23))) == [(D, 22), (D, 22)]  # both files of hour 22
    # inside the hour, the files' timestamp bounds prune further: b6's file only, then none
    assert planned(TimeRange(at(D, 22, 5), at(D, 22, 10))) == [(D, 22)]
    assert planned(TimeRange(at(D, 22, 30), at(D, 22, 31))) == []
    assert planned(TimeRange(at(D, 23, 30), at(D1, 0, 30))) == [(D, 23), (D1, 0)]
    assert planned(TimeRange.day(D1)) == [(D1, 0)]
    assert planned(TimeRange(at(D, 10), at(D, 12))) == []


@pytest.mark.parametrize(
    "tf",
    [
        TradeFilter(TimeRange(at(D, 22), at(D, 23)), "BTC/USDT"),
        TradeFilter(TimeRange(at(D, 22, 5), at(D, 22, 10)), "BTC/USDT"),
        TradeFilter(TimeRange(at(D, 20), at(D1, 2)), "ETH/USDT"),
        TradeFilter(TimeRange.day(D), None, "KRAKEN"),
        TradeFilter(TimeRange(at(D, 10), at(D, 12)), None),
    ],
)
def test_cached_planning_is_pyicebergs_plan(gold: dict[str, Any], tf: TradeFilter) -> None:
    from k2.gold_queries import ScanStats

    table = gold["table"]
    reader = GoldReader(table)
    want = sorted(t.file.file_path for t in table.scan(row_filter=tf.iceberg()).plan_files())
    for _ in range(2):  # cold, then from the cached manifests
        assert sorted(t.file.file_path for t in reader.plan(tf.iceberg(), ScanStats())) == want


def test_refresh_sees_new_commits(catalog: dict[str, Any]) -> None:
    cat = load_catalog(catalog["uri"], catalog["warehouse"])
    spec = dataclasses.replace(GOLD, namespace=f"k2_test_query_{uuid.uuid4().hex[:8]}")
    iceberg_ddl.apply(cat, iceberg_ddl.plan_in(cat, spec))
    try:
        reader = GoldReader(cat.load_table(spec.identifier))
        table = cat.load_table(spec.identifier)  # the writer's own table object
        assert reader.latest("BTC/USDT", 5).rows == [] and reader.extent() is None
        table.append(trades_table(gold_arrow_schema(table), [T["b1"], T["b2"]]))
        assert reader.latest("BTC/USDT", 5).rows == []  # the cached metadata: no new snapshot yet
        reader.refresh()
        assert latest_names(reader.latest("BTC/USDT", 5)) == ["b2", "b1"]
        table.append(trades_table(gold_arrow_schema(table), [T["b9"]]))
        reader.refresh()
        assert latest_names(reader.latest("BTC/USDT", 1)) == ["b9"]
    finally:
        iceberg_ddl.drop(cat, spec.identifier, purge=True)


def test_latest_reads_the_newest_hour_first_and_widens_only_when_short(reader: GoldReader) -> None:
    r = reader.latest("BTC/USDT", 2)
    assert latest_names(r) == ["b9", "b8"]
    assert r.stats.partitions == {(D1, 0)} and r.stats.plans == 1 and r.stats.files == 1

    r = reader.latest("BTC/USDT", 3)
    assert latest_names(r) == ["b9", "b8", "b7"]
    assert r.stats.partitions == {(D1, 0), (D, 23)} and r.stats.plans == 2

    r = reader.latest("BTC/USDT", 20)
    assert latest_names(r) == ["b9", "b8", "b7", "b6", "k2", "b5", "b4", "b3", "b2", "b1", "k1"]
    assert r.columns == ["timestamp", "exchange", "symbol", "side", "price", "quantity", "trade_id"]
    first = r.records()[0]
    assert (
        first["price"] == Decimal("67150.5")
        and first["quantity"] == Decimal("0.6")
        and first["side"] == "SELL"
    )
    assert first["timestamp"] == at(D1, 0, 59, 59, 999_999)

    r = reader.latest("BTC/USDT", 5, exchange="KRAKEN")
    assert latest_names(r) == ["k2", "k1"]

    r = reader.latest("ETH/USDT", 10)
    assert latest_names(r) == ["e2", "e1"]
    assert r.stats.plans == 3  # hour 00, hour 23, hours 21-22: then the data ends


def test_unknown_symbol_is_an_empty_result_with_a_message(reader: GoldReader) -> None:
    r = reader.latest("DOGE/USDT", 5)
    assert r.rows == []
    assert (
        r.message is not None and "no trades for DOGE/USDT" in r.message and "BTC/USDT" in r.message
    )
    r = reader.vwap("DOGE/USDT", TimeRange.day(D))
    assert r.rows == [] and r.message is not None and "DOGE/USDT" in r.message


@pytest.mark.parametrize(
    "interval,step,tr",
    [
        ("1m", 60, TimeRange(at(D, 22), at(D, 22, 10))),
        ("5m", 300, TimeRange(at(D, 21), at(D1, 1))),
        ("1h", 3600, TimeRange.day(D)),
        (
            "1m",
            60,
            TimeRange(at(D, 22, 0, 10), at(D, 22, 1, 59, 999_999)),
        ),  # unaligned, until exclusive
    ],
)
def test_ohlcv_bars_are_exact(reader: GoldReader, interval: str, step: int, tr: TimeRange) -> None:
    r = reader.ohlcv("BTC/USDT", interval, tr)
    assert r.rows == ref_ohlcv("BTC/USDT", step, tr)
    # hour 21 holds only ETH/USDT: the file's symbol bounds prune it too
    assert r.stats.partitions == set(tr.partitions()) & {(D, 22), (D, 23), (D1, 0)}


def test_ohlcv_ties_break_on_trade_id(reader: GoldReader) -> None:
    r = reader.ohlcv("BTC/USDT", "1m", TimeRange(at(D, 22), at(D, 23)), exchange="BINANCE")
    bars = {row[0]: row for row in r.rows}
    b0 = bars[at(D, 22, 0)]
    # open b1 (id 100 before 101 at the same µs), close b3
    assert b0[2:] == (
        Decimal("67000"),
        Decimal("67001"),
        Decimal("66990.5"),
        Decimal("66990.5"),
        Decimal("1.75"),
        3,
    )
    b1 = bars[at(D, 22, 1)]
    # open b4 (id 103), close b5 (id 104) at the same µs
    assert b1[2:] == (
        Decimal("67010.12345678"),
        Decimal("67010.12345678"),
        Decimal("67005"),
        Decimal("67005"),
        Decimal("0.10000001"),
        2,
    )
    assert {row[1] for row in r.rows} == {"BINANCE"}


@pytest.mark.parametrize(
    "tr",
    [
        TimeRange(at(D, 22), at(D, 23)),
        TimeRange.day(D),
        TimeRange(at(D, 22, 0, 10), at(D, 22, 1, 59, 999_999)),
        TimeRange(at(D, 21), at(D1, 1)),
    ],
)
def test_vwap_is_decimal_exact(reader: GoldReader, tr: TimeRange) -> None:
    r = reader.vwap("BTC/USDT", tr)
    got = {
        row["exchange"]: (row["vwap"], row["volume"], row["notional"], row["trades"])
        for row in r.records()
    }
    assert got == ref_vwap("BTC/USDT", tr)


def test_vwap_by_hand() -> None:
    notional = (
        Decimal("67000.00") * Decimal("0.5")
        + Decimal("67001.00") * Decimal("0.25")
        + Decimal("66990.50")
    )
    assert ref_vwap("BTC/USDT", TimeRange(at(D, 22, 0, 10), at(D, 22, 0, 41)))[B] == (
        (notional / Decimal("1.75")).quantize(Decimal("0.00000001")),
        Decimal("1.75"),
        notional,
        3,
    )


def test_counts_per_exchange_per_hour(reader: GoldReader) -> None:
    r = reader.counts(TimeRange.day(D))
    assert r.rows == [(D, 21, B, 2), (D, 22, B, 6), (D, 22, K, 2), (D, 23, B, 1), (D, 23, K, 1)]
    r = reader.counts(TimeRange(at(D, 22, 5), at(D1, 1)), exchange=B)
    assert r.rows == [(D, 22, B, 1), (D, 23, B, 1), (D1, 0, B, 2)]
    r = reader.counts()  # default: the 24 hours ending with the newest data
    assert sum(row[3] for row in r.rows) == len(T)


def test_defaults_anchor_at_the_newest_data(reader: GoldReader) -> None:
    ext = reader.extent()
    assert ext is not None and (ext.oldest, ext.newest) == (at(D, 21), at(D1, 0))
    r = reader.vwap("BTC/USDT")  # the newest hour
    assert [row[0] for row in r.rows] == [B] and r.records()[0]["trades"] == 2
    r = reader.ohlcv("BTC/USDT", "1h")  # 24 hours
    assert len(r.rows) == len(ref_ohlcv("BTC/USDT", 3600, TimeRange(at(D, 1), at(D1, 1))))


def test_missing_table_says_how_to_create_it(gold: dict[str, Any]) -> None:
    with pytest.raises(GoldTableMissing, match="k2 tables apply"):
        GoldReader.load(gold["catalog"], "no_such_namespace.gold_crypto_trades")


def _cli(gold: dict[str, Any], *argv: str) -> tuple[int, str]:
    from k2.query import main

    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(
            [
                *argv,
                "--catalog-uri",
                gold["uri"],
                "--warehouse",
                gold["warehouse"],
                "--table",
                gold["identifier"],
            ]
        )
    return rc, out.getvalue()


def test_cli_json_and_table_output(gold: dict[str, Any]) -> None:
    rc, out = _cli(gold, "latest", "--symbol", "btc/usdt", "--limit", "2", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert [r["trade_id"] for r in doc["rows"]] == ["108", "107"]
    assert (
        doc["rows"][0]["price"] == "67150.50000000"
        and doc["rows"][0]["timestamp"] == "2025-06-03T00:59:59.999999Z"
    )
    assert doc["scan"]["partitions"] == ["2025-06-03/00"]

    rc, out = _cli(gold, "vwap", "--symbol", "BTC/USDT", "--date", "2025-06-02")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["exchange", "vwap", "volume", "notional", "trades", "first", "last"]
    assert [ln.split()[0] for ln in lines[2:]] == ["BINANCE", "KRAKEN", "ALL"]

    rc, out = _cli(gold, "counts", "--date", "2025-06-03", "--json")
    assert json.loads(out)["rows"] == [
        {"exchange_date": "2025-06-03", "exchange_hour": 0, "exchange": "BINANCE", "trades": 2}
    ]


def test_cli_errors_are_clear(gold: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from k2.query import main

    rc = main(["latest", "--symbol", "BTC/USDT", "--catalog-uri", gold["uri"], "--warehouse", gold["warehouse"],
               "--table", "nowhere.gold_crypto_trades"])  # fmt: skip
    assert rc == 2 and "run `k2 up` or `k2 tables apply` first" in capsys.readouterr().err
    rc = main(["latest", "--symbol", "BTCUSDT", "--catalog-uri", gold["uri"], "--warehouse", gold["warehouse"],
               "--table", gold["identifier"]])  # fmt: skip
    assert rc == 2 and "BASE/QUOTE" in capsys.readouterr().err


def test_bench_query_smoke(gold: dict[str, Any], tmp_path: Any) -> None:
    from k2.bench import query as bench

    args = argparse.Namespace(
        quick=True,
        out=tmp_path,
        query_rows=5_000,
        query_runs=2,
        query_seed=1,
        query_catalog="auto",
        query_catalog_uri=gold["uri"],
        query_warehouse=gold["warehouse"],
        query_files_per_hour=1,
        query_rebuild=True,
        query_layout="compacted",
    )
    result = bench.run(args)
    files = result["table"]["data_files"]
    assert result["rows"] == 5_000 and result["build"]["compacted_hours"] == 24
    assert 24 < files <= 24 * 11  # one per exchange and symbol of each hour
    assert set(result["queries"]) == set(bench.QUERY_TYPES)
    assert result["overall"]["n"] == 2 * len(bench.POINT_TYPES)
    assert result["overall_with_wide"]["n"] == 2 * len(bench.QUERY_TYPES)
    assert result["queries"]["latest"]["files_p50"] <= 2  # the newest hour, its symbol only
    assert result["queries"]["ohlcv"]["files_p50"] <= 2  # one hour, one symbol (1-2 exchanges)
    assert result["queries"]["counts_day"]["files_p50"] == files
    assert result["queries"]["counts_day"]["metadata_only_files_p50"] == files  # no data read
    assert result["fallback_files"] == 0 and result["catalog"]["kind"] == "rest"
