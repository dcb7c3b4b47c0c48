"""Deterministic synthetic trades: the same seed always gives the same tape.

The tape is an infinite sequence of trades, addressable by index in O(1) (no state,
no memory): index i belongs to block i // batch, blocks go round-robin over the
symbols, so consecutive trades of one block share a symbol (Kraken batches them in one
frame) and every symbol's trade ids are sequential. Prices follow a slow wave around a
realistic level with seeded noise, sizes are log-spread; both are rounded to the
exchange's ticks so their text is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

_MASK = (1 << 64) - 1

BASE_PRICES = {
    "BTC": 60000.0,
    "ETH": 3000.0,
    "SOL": 150.0,
    "BNB": 550.0,
    "XRP": 0.6,
    "ADA": 0.45,
    "DOGE": 0.15,
    "LTC": 80.0,
    "XMR": 160.0,
}


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class SynthTrade:
    index: int  # position on the tape
    symbol: str  # canonical BASE/QUOTE
    trade_id: int  # sequential per symbol
    price: str  # exact text, 8 decimals (Binance style)
    qty: str
    buyer_is_maker: bool  # Binance 'm': True -> taker SELL

    @property
    def side(self) -> str:
        return "SELL" if self.buyer_is_maker else "BUY"

    def price_decimal(self) -> Decimal:
        return Decimal(self.price)

    def qty_decimal(self) -> Decimal:
        return Decimal(self.qty)


PERIOD = 8192  # each symbol's price path repeats after this many of its trades


class Tape:
    """Trade i of a seeded synthetic market, computed on demand in O(1).

    Per symbol, one period of a seeded random walk (a bridge: it ends where it began,
    so the path repeats smoothly) of prices, sizes and sides is rendered to exact text
    once; trade i then is a table lookup plus its sequential id.
    """

    def __init__(
        self,
        symbols: tuple[str, ...] | list[str],
        seed: int = 1,
        batch: int = 1,
        first_id: int = 5_000_000_001,
        invalid_every: int | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("a tape needs at least one symbol")
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.symbols = tuple(symbols)
        self.seed = seed
        self.batch = batch
        self.first_id = first_id
        # Every Nth trade (by tape position) has price 0: parseable, so it reaches Kafka
        # and bronze, and silver must route it to the dead-letter table.
        self.invalid_every = invalid_every
        self._tables: dict[str, list[tuple[str, str, bool]]] = {}

    def symbol_of(self, index: int) -> str:
        return self.symbols[(index // self.batch) % len(self.symbols)]

    def seq_of(self, index: int) -> int:
        """0-based position of trade `index` within its symbol's own sequence."""
        block = index // self.batch
        return (block // len(self.symbols)) * self.batch + index % self.batch

    def index_of(self, symbol: str, seq: int) -> int:
        s = self.symbols.index(symbol)
        block = (seq // self.batch) * len(self.symbols) + s
        return block * self.batch + seq % self.batch

    def table(self, symbol: str) -> list[tuple[str, str, bool]]:
        """(price text, quantity text, buyer_is_maker) for one period of the symbol's path."""
        t = self._tables.get(symbol)
        if t is None:
            t = self._tables[symbol] = self._build(symbol)
        return t

    def _build(self, symbol: str) -> list[tuple[str, str, bool]]:
        import random

        rng = random.Random(splitmix64(self.seed ^ hash_str(symbol)))  # noqa: S311 - test data
        level = BASE_PRICES.get(symbol.split("/", 1)[0], 10.0)
        steps = [rng.gauss(0.0, 0.0002) for _ in range(PERIOD)]
        drift = sum(steps) / PERIOD
        tick_decimals = 2 if level >= 10 else 4
        size_scale = 50.0 / level  # ~ $50 median notional
        out = []
        x = 0.0
        for i in range(PERIOD):
            x += steps[i] - drift
            price_units = max(1, round(level * math.exp(x) * 10**tick_decimals))
            qty_units = max(
                1, round(size_scale * (10 ** (4 * rng.random() - 2)) * 1e5)
            )  # 5 decimals
            out.append(
                (_fixed8(price_units, tick_decimals), _fixed8(qty_units, 5), rng.random() < 0.5)
            )
        return out

    def is_invalid(self, index: int) -> bool:
        n = self.invalid_every
        return bool(n) and index % n == n - 1  # type: ignore[operator]

    def trade(self, index: int) -> SynthTrade:
        symbol = self.symbol_of(index)
        seq = self.seq_of(index)
        price, qty, maker = self.table(symbol)[seq % PERIOD]
        if self.is_invalid(index):
            price = INVALID_PRICE
        return SynthTrade(
            index=index,
            symbol=symbol,
            trade_id=self.first_id + seq,
            price=price,
            qty=qty,
            buyer_is_maker=maker,
        )


INVALID_PRICE = "0.00000000"


def _fixed8(units: int, decimals: int) -> str:
    """units * 10**-decimals as text with exactly 8 decimals ("60241.84000000")."""
    scale = 10**decimals
    return f"{units // scale}.{units % scale:0{decimals}d}{'0' * (8 - decimals)}"


def hash_str(s: str) -> int:
    """A stable (not per-process randomized) 64-bit hash of a string."""
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & _MASK
    return h
