"""A fast generator of a realistic gold table, for query tests and `k2 bench query`.

`generate_hours(...)` yields one Arrow table per UTC hour, already shaped like the
gold table (the schema comes from the Iceberg table itself, i.e. from the GOLD
`TableSpec`; nothing here restates it) and sorted by the GOLD sort order
(timestamp, trade_id). Both exchanges, several symbols each, prices as a random
walk on each market's tick size, lognormal quantities on its lot size, more trades
in the European/US afternoon than at night, sequential trade ids per market and
deterministic message ids (`k2.contracts.trade.message_id`). Everything is
vectorised (numpy + pyarrow): about a million rows a second on one core.

`write_gold(table, hours)` appends them through pyiceberg, which partitions by
identity(exchange_date), identity(exchange_hour); each hour is one commit, as an
hourly compaction of the streaming gold table would leave it.

`trades_table(schema, trades)` turns a handful of hand-written trades into gold
rows (derived columns filled in), for tests that assert exact results.
"""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.contracts.tables import GOLD
from k2.contracts.trade import SCALE, SIDES, message_id, to_decimal

if TYPE_CHECKING:
    from pyiceberg.table import Table

UTC = dt.UTC
_MICROS_PER_HOUR = 3_600_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)

# The partition source columns and the sort order, from the contract.
DATE_COLUMN, HOUR_COLUMN = (p.source for p in GOLD.partition_by)
SORT_COLUMNS: tuple[str, ...] = tuple(s.source for s in GOLD.sort_by)


@dataclass(frozen=True)
class Market:
    exchange: str
    symbol: str  # canonical BASE/QUOTE
    native_symbol: str
    price: float  # starting price
    price_decimals: int  # tick size 10**-price_decimals
    qty_median: float
    qty_decimals: int  # lot size 10**-qty_decimals
    share: float  # share of the day's trades
    first_trade_id: int

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]


# Roughly the mix of a real day: Binance's USDT books carry most of the volume.
MARKETS: tuple[Market, ...] = (
    Market("BINANCE", "BTC/USDT", "BTCUSDT", 67_250.0, 2, 0.004, 5, 0.26, 5_000_000_001),
    Market("BINANCE", "ETH/USDT", "ETHUSDT", 3_480.0, 2, 0.05, 4, 0.17, 2_100_000_001),
    Market("BINANCE", "SOL/USDT", "SOLUSDT", 151.0, 2, 1.5, 3, 0.11, 900_000_001),
    Market("BINANCE", "XRP/USDT", "XRPUSDT", 0.5234, 4, 400.0, 0, 0.07, 700_000_001),
    Market("BINANCE", "DOGE/USDT", "DOGEUSDT", 0.12345, 5, 1_500.0, 0, 0.06, 600_000_001),
    Market("BINANCE", "ETH/BTC", "ETHBTC", 0.05175, 5, 0.2, 4, 0.03, 480_000_001),
    Market("KRAKEN", "BTC/USD", "BTC/USD", 67_240.0, 1, 0.01, 8, 0.12, 80_000_001),
    Market("KRAKEN", "ETH/USD", "ETH/USD", 3_479.5, 2, 0.2, 8, 0.08, 60_000_001),
    Market("KRAKEN", "SOL/USD", "SOL/USD", 150.9, 2, 3.0, 8, 0.04, 20_000_001),
    Market("KRAKEN", "BTC/USDT", "BTC/USDT", 67_255.0, 1, 0.005, 8, 0.03, 9_000_001),
    Market("KRAKEN", "XRP/USD", "XRP/USD", 0.5236, 5, 500.0, 8, 0.03, 15_000_001),
)

# Trades per UTC hour relative to the quietest: Asia morning, Europe, then the US open.
_HOURLY_PROFILE = np.array(
    [
        0.9,
        0.8,
        0.75,
        0.7,
        0.7,
        0.75,
        0.85,
        0.95,
        1.05,
        1.1,
        1.1,
        1.1,
        1.2,
        1.45,
        1.7,
        1.75,
        1.6,
        1.4,
        1.2,
        1.1,
        1.05,
        1.0,
        0.95,
        0.9,
    ]
)


@dataclass(frozen=True)
class FixtureParams:
    trades_per_day: int
    days: tuple[dt.date, ...]
    seed: int = 42

    def describe(self) -> str:
        """Stored as a table property, so a cached bench table is reused only if it matches."""
        first, last = self.days[0].isoformat(), self.days[-1].isoformat()
        return f"gold-fixture v1 trades_per_day={self.trades_per_day} days={first}..{last} seed={self.seed}"


def default_days(n: int = 1, start: dt.date = dt.date(2025, 6, 2)) -> tuple[dt.date, ...]:
    return tuple(start + dt.timedelta(days=i) for i in range(n))


def _decimal_array(unscaled: np.ndarray, type_: pa.DataType) -> pa.Array:
    """decimal128 from unscaled int64 values (16-byte little-endian two's complement)."""
    words = np.empty((len(unscaled), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(type_, len(unscaled), [None, pa.py_buffer(words)])


def _string_ids(prefix: str, ids: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(pa.array(ids), pa.string()), "")


def _repeat(values: Sequence[str], indices: np.ndarray) -> pa.Array:
    """Strings by index into a small list (much faster than building numpy string arrays)."""
    return pa.array(list(values), pa.string()).take(pa.array(indices))


def _vendor_data(
    market: Market, rng: np.random.Generator, n: int, map_type: pa.MapType
) -> pa.Array:
    """A few verbatim exchange fields, as the ingestors keep them: native symbol and one more."""
    if market.exchange == "BINANCE":
        key, choices, p_first = "is_best_match", ("true", "false"), 0.999
    else:
        key, choices, p_first = "ord_type", ("market", "limit"), 0.7
    keys = _repeat(("native_symbol", key), np.tile(np.array([0, 1], dtype=np.int8), n))
    item_idx = np.empty(2 * n, dtype=np.int8)
    item_idx[0::2] = 0
    item_idx[1::2] = np.where(rng.random(n) < p_first, 1, 2)
    items = _repeat((market.native_symbol, *choices), item_idx)
    offsets = pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32))
    return pa.MapArray.from_arrays(offsets, keys, items).cast(map_type)


class _MarketState:
    def __init__(self, market: Market) -> None:
        self.market = market
        self.price = market.price
        self.next_trade_id = market.first_trade_id


def generate_hours(
    schema: pa.Schema,
    params: FixtureParams,
) -> Iterator[pa.Table]:
    """One gold-shaped Arrow table per UTC hour of `params.days`, in time order."""
    rng = np.random.default_rng(params.seed)
    states = [_MarketState(m) for m in MARKETS]
    shares = np.array([m.share for m in MARKETS])
    shares = shares / shares.sum()
    hour_weights = _HOURLY_PROFILE / _HOURLY_PROFILE.sum()
    # Daily volatility ~3%; per trade it scales with 1/sqrt(trades of that market per day).
    daily_sigma = 0.03
    for day in params.days:
        per_hour = rng.multinomial(params.trades_per_day, hour_weights)
        for hour in range(24):
            start_us = int(
                (dt.datetime.combine(day, dt.time(hour), UTC) - _EPOCH)
                / dt.timedelta(microseconds=1)
            )
            counts = rng.multinomial(per_hour[hour], shares)
            parts = [
                _market_hour(
                    st,
                    int(n),
                    start_us,
                    day,
                    hour,
                    schema,
                    rng,
                    params.trades_per_day * share,
                    daily_sigma,
                )
                for st, n, share in zip(states, counts, shares, strict=True)
                if n > 0
            ]
            if not parts:
                continue
            table = pa.concat_tables(parts).combine_chunks()
            yield table.take(pc.sort_indices(table, [(c, "ascending") for c in SORT_COLUMNS]))


def _market_hour(
    st: _MarketState,
    n: int,
    start_us: int,
    day: dt.date,
    hour: int,
    schema: pa.Schema,
    rng: np.random.Generator,
    trades_per_day: float,
    daily_sigma: float,
) -> pa.Table:
    m = st.market
    # Trades cluster: draw times, then let a third of them share the previous trade's
    # microsecond (one taker order filling several makers).
    ts = np.sort(rng.integers(0, _MICROS_PER_HOUR, n)) + start_us
    same = rng.random(n) < 0.33
    same[0] = False
    idx = np.where(same, 0, np.arange(n))
    np.maximum.accumulate(idx, out=idx)
    ts = ts[idx]
    sigma = daily_sigma / np.sqrt(max(trades_per_day, 1.0))
    log_path = np.cumsum(rng.normal(0.0, sigma, n))
    prices = st.price * np.exp(log_path)
    st.price = float(prices[-1])
    price_units = 10 ** (SCALE - m.price_decimals)
    price_unscaled = (
        np.maximum(np.rint(prices * 10**m.price_decimals).astype(np.int64), 1) * price_units
    )
    qty = rng.lognormal(np.log(m.qty_median), 1.2, n)
    qty_units = 10 ** (SCALE - m.qty_decimals)
    qty_unscaled = np.maximum(np.rint(qty * 10**m.qty_decimals).astype(np.int64), 1) * qty_units
    trade_ids = np.arange(st.next_trade_id, st.next_trade_id + n, dtype=np.int64)
    st.next_trade_id += n
    ingest_us = ts + rng.integers(20_000, 400_000, n)
    zeros = np.zeros(n, dtype=np.int8)

    columns: dict[str, pa.Array] = {
        "message_id": _string_ids(message_id(m.exchange, m.native_symbol, ""), trade_ids),
        "trade_id": pc.cast(pa.array(trade_ids), pa.string()),
        "symbol": _repeat((m.symbol,), zeros),
        "exchange": _repeat((m.exchange,), zeros),
        "timestamp": pa.array(ts, pa.int64()),
        "price": price_unscaled,
        "quantity": qty_unscaled,
        "base_asset": _repeat((m.base,), zeros),
        "quote_currency": _repeat((m.quote,), zeros),
        "side": _repeat(SIDES, (rng.random(n) < 0.5).astype(np.int8)),
        "ingestion_timestamp": pa.array(ingest_us, pa.int64()),
        DATE_COLUMN: pa.array(np.full(n, (day - _EPOCH.date()).days, dtype=np.int32)),
        HOUR_COLUMN: pa.array(np.full(n, hour, dtype=np.int32)),
    }
    arrays = []
    for field in schema:
        if field.name == "vendor_data":
            arrays.append(_vendor_data(m, rng, n, field.type))
            continue
        value = columns[field.name]
        if isinstance(value, np.ndarray):
            arrays.append(_decimal_array(value, field.type))
        elif pa.types.is_timestamp(field.type):
            arrays.append(value.cast(field.type))
        elif pa.types.is_date32(field.type):
            arrays.append(value.view(pa.date32()))
        else:
            arrays.append(value.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def gold_arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema pyiceberg expects for appends to `table` (field ids included)."""
    return table.schema().as_arrow()


def write_gold(
    table: Table, hours: Iterable[pa.Table], *, files_per_hour: int = 1
) -> dict[str, Any]:
    """Append hour by hour (one commit each); returns rows and commits written.

    pyiceberg 0.12 cannot write parquet bloom filters: GOLD's bloom filter on message_id
    is absent from these files (Spark-written gold has it; no query here uses it).
    """
    rows = commits = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Parquet writer option\(s\) .*bloom-filter")
        for hour_table in hours:
            n = hour_table.num_rows
            if files_per_hour <= 1:
                table.append(hour_table)
            else:
                bounds = np.linspace(0, n, files_per_hour + 1).astype(int)
                with table.transaction() as tx:
                    for lo, hi in itertools.pairwise(bounds):
                        if hi > lo:
                            tx.append(hour_table.slice(int(lo), int(hi - lo)))
            rows += n
            commits += 1
    return {"rows": rows, "commits": commits}


def trades_table(schema: pa.Schema, trades: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Gold rows from hand-written trades.

    Each trade needs exchange, symbol, trade_id, timestamp (aware datetime), price and
    quantity (str or Decimal); side defaults to BUY. The other columns are derived as
    the pipeline derives them (message_id, base/quote, exchange_date/hour, ...).
    """
    rows = []
    for t in trades:
        ts: dt.datetime = t["timestamp"].astimezone(UTC)
        base, quote = t["symbol"].split("/")
        native = t.get(
            "native_symbol",
            t["symbol"].replace("/", "") if t["exchange"] == "BINANCE" else t["symbol"],
        )
        row = {
            "message_id": t.get("message_id", message_id(t["exchange"], native, t["trade_id"])),
            "trade_id": str(t["trade_id"]),
            "symbol": t["symbol"],
            "exchange": t["exchange"],
            "timestamp": ts,
            "price": to_decimal(t["price"], "price"),
            "quantity": to_decimal(t["quantity"], "quantity"),
            "base_asset": base,
            "quote_currency": quote,
            "side": t.get("side", "BUY"),
            "ingestion_timestamp": t.get(
                "ingestion_timestamp", ts + dt.timedelta(milliseconds=100)
            ),
            "vendor_data": [("native_symbol", native)],
            DATE_COLUMN: ts.date(),
            HOUR_COLUMN: ts.hour,
        }
        missing = set(schema.names) - set(row)
        if missing:
            raise KeyError(f"trades_table does not know how to fill {sorted(missing)}")
        rows.append({name: row[name] for name in schema.names})
    table = pa.Table.from_pylist(rows, schema=schema)
    return table.take(pc.sort_indices(table, [(c, "ascending") for c in SORT_COLUMNS]))


__all__ = [
    "MARKETS",
    "FixtureParams",
    "Market",
    "default_days",
    "generate_hours",
    "gold_arrow_schema",
    "trades_table",
    "write_gold",
]
