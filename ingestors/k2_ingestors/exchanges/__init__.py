"""One declarative adapter per exchange; `ADAPTERS` maps lower-case names to classes."""

from __future__ import annotations

from k2_ingestors.exchanges.base import Event, ExchangeAdapter, ParseError
from k2_ingestors.exchanges.binance import BinanceAdapter
from k2_ingestors.exchanges.kraken import KrakenAdapter

ADAPTERS: dict[str, type[ExchangeAdapter]] = {"binance": BinanceAdapter, "kraken": KrakenAdapter}

__all__ = ["ADAPTERS", "BinanceAdapter", "Event", "ExchangeAdapter", "KrakenAdapter", "ParseError"]
