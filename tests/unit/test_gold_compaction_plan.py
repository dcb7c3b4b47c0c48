"""The pure half of gold compaction: which hours, and how rows are split."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from k2.gold_compaction import (
    FileFacts,
    Hour,
    hours_to_compact,
    is_clustered,
    split_clusters,
)
from k2.gold_queries import single_value

D = dt.date(2025, 6, 2)
UTC = dt.UTC


def f(
    hour: int, lo: str | None, hi: str | None, deletes: bool = False, day: dt.date = D
) -> FileFacts:
    """A file of one hour whose symbol bounds are lo..hi (exchange always BINANCE)."""
    key = ("BINANCE", lo) if lo is not None and lo == hi else None
    return FileFacts(f"/w/{hour}-{lo}-{hi}", Hour(day, hour), 10, key, deletes)


def test_hour_end_is_the_next_hour_start_in_utc() -> None:
    assert Hour(D, 23).end == dt.datetime(2025, 6, 3, tzinfo=UTC)
    assert str(Hour(D, 7)) == "2025-06-02 07:00"


@pytest.mark.parametrize(
    ("files", "clustered"),
    [
        ([f(1, "BTC/USDT", "BTC/USDT"), f(1, "ETH/USDT", "ETH/USDT")], True),
        ([f(1, "BTC/USDT", "ETH/USDT")], False),  # one file, two symbols
        (
            [f(1, "BTC/USDT", "BTC/USDT"), f(1, "BTC/USDT", "BTC/USDT")],
            False,
        ),  # two files, one symbol
        ([f(1, None, None)], False),  # no bounds: cannot tell
        ([], True),
        (  # one symbol, two exchanges, one file each: clustered
            [
                FileFacts("/a", Hour(D, 1), 1, ("BINANCE", "BTC/USDT")),
                FileFacts("/b", Hour(D, 1), 1, ("KRAKEN", "BTC/USDT")),
            ],
            True,
        ),
    ],
)
def test_is_clustered(files: list[FileFacts], clustered: bool) -> None:
    assert is_clustered(files) is clustered


def test_hours_to_compact_only_closed_unclustered_hours_without_deletes() -> None:
    files = [
        f(9, "A/B", "C/D"),  # closed, mixed: compact
        f(10, "A/B", "A/B"),
        f(10, "C/D", "C/D"),  # closed, clustered: leave
        f(11, "A/B", "C/D", deletes=True),  # someone deleted rows: leave
        f(12, "A/B", "A/B"),
        f(12, "A/B", "A/B"),  # closed, two files of one symbol: compact
        f(13, "A/B", "C/D"),  # still open (ends 14:00 > cutoff)
    ]
    cutoff = dt.datetime(2025, 6, 2, 13, 59, tzinfo=UTC)
    assert hours_to_compact(files, cutoff) == [Hour(D, 9), Hour(D, 12)]
    assert hours_to_compact(files, cutoff + dt.timedelta(minutes=1))[-1] == Hour(D, 13)


def test_single_value_from_manifest_bounds() -> None:
    assert single_value(b"KRAKEN", b"KRAKEN") == "KRAKEN"
    assert single_value(b"BINANCE", b"KRAKEN") is None
    assert single_value(None, b"KRAKEN") is None


def test_split_by_exchange_and_symbol_keeps_every_row_and_sorts_each_piece() -> None:
    rows = pa.table(
        {
            "exchange": ["BINANCE"] * 5 + ["KRAKEN", "KRAKEN"],
            "symbol": [
                "ETH/USDT",
                "BTC/USDT",
                "ETH/USDT",
                "BTC/USDT",
                "BTC/USDT",
                "XRP/USD",
                "BTC/USDT",
            ],
            "timestamp": [5, 3, 1, 3, 1, 2, 0],
            "trade_id": ["9", "8", "7", "2", "6", "1", "5"],
            "price": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    pieces = split_clusters(rows)
    assert [(p.column("exchange")[0].as_py(), p.column("symbol")[0].as_py()) for p in pieces] == [
        ("BINANCE", "BTC/USDT"),
        ("BINANCE", "ETH/USDT"),
        ("KRAKEN", "BTC/USDT"),
        ("KRAKEN", "XRP/USD"),
    ]
    assert all(len(set(p.column("symbol").to_pylist())) == 1 for p in pieces)
    assert all(len(set(p.column("exchange").to_pylist())) == 1 for p in pieces)
    assert pieces[0].select(["timestamp", "trade_id"]).to_pylist() == [
        {"timestamp": 1, "trade_id": "6"},
        {"timestamp": 3, "trade_id": "2"},
        {"timestamp": 3, "trade_id": "8"},
    ]
    assert sorted(pa.concat_tables(pieces).column("price").to_pylist()) == [1, 2, 3, 4, 5, 6, 7]
    assert split_clusters(rows.slice(0, 0)) == []
    assert len(split_clusters(rows.slice(1, 1))) == 1
