"""Ingestor configuration: dataclasses filled from defaults, then K2_* env vars, then flags.

Env vars: K2_<EXCHANGE>_<NAME> wins over K2_<NAME>, e.g. K2_BINANCE_SYMBOLS or K2_SYMBOLS.
    SYMBOLS (comma separated, canonical BASE/QUOTE), URLS (comma separated, failover order),
    SINK (kafka|jsonl), BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL, TOPIC, DEAD_LETTER_TOPIC,
    METRICS_PORT, BUFFER_SIZE, PARTITIONS, ROTATE_AFTER, STALE_AFTER, BACKOFF_INITIAL,
    BACKOFF_MAX, BREAKER_THRESHOLD, BREAKER_COOLDOWN, OVERLAP_TIMEOUT, APP_PING_INTERVAL;
    Binance: BINANCE_STREAM (trade|aggTrade); Kraken: KRAKEN_SNAPSHOT (true|false).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from k2.contracts.topics import DEAD_LETTER_TOPIC, trades_topic
from k2_ingestors.exchanges import ADAPTERS, BinanceAdapter, ExchangeAdapter, KrakenAdapter
from k2_ingestors.wsclient import ClientPolicy

SINKS = ("kafka", "jsonl")
_POLICY_ENV = {
    "ROTATE_AFTER": "rotate_after",
    "STALE_AFTER": "stale_after",
    "BACKOFF_INITIAL": "backoff_initial",
    "BACKOFF_MAX": "backoff_max",
    "BREAKER_THRESHOLD": "breaker_threshold",
    "BREAKER_COOLDOWN": "breaker_cooldown",
    "OVERLAP_TIMEOUT": "overlap_timeout",
    "APP_PING_INTERVAL": "app_ping_interval",
}


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass
class IngestConfig:
    exchange: ClassVar[str] = ""
    default_symbols: ClassVar[tuple[str, ...]] = ()

    symbols: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()  # empty: the adapter's default endpoints
    sink: str = "kafka"
    bootstrap_servers: str = "127.0.0.1:9092"
    schema_registry_url: str = "http://127.0.0.1:8081"
    topic: str = ""  # empty: market.crypto.trades.<exchange>
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    metrics_port: int | None = None  # None: no HTTP server; 0: any free port
    metrics_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    buffer_size: int = 100_000
    partitions: int = 3
    policy: ClientPolicy = field(default_factory=ClientPolicy)

    def __post_init__(self) -> None:
        if not self.symbols:
            self.symbols = self.default_symbols
        self.symbols = tuple(self.symbols)
        self.urls = tuple(self.urls)
        if not self.topic:
            self.topic = trades_topic(self.exchange)
        if self.sink not in SINKS:
            raise ValueError(f"sink must be one of {', '.join(SINKS)}, not {self.sink!r}")
        for s in self.symbols:
            base, _, quote = s.partition("/")
            if not base or not quote or s != s.upper():
                raise ValueError(f"{s!r} is not a canonical BASE/QUOTE symbol like 'BTC/USDT'")

    def adapter(self) -> ExchangeAdapter:
        return ADAPTERS[self.exchange.lower()](self.symbols)

    def endpoint_urls(self) -> tuple[str, ...]:
        return self.urls or type(self.adapter()).default_urls

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> IngestConfig:
        """Defaults, then env vars, then `overrides` (None values are ignored)."""
        env = os.environ if env is None else env
        prefix = f"K2_{cls.exchange.upper()}_"

        def get(name: str) -> str | None:
            return env.get(prefix + name, env.get("K2_" + name))

        values: dict[str, Any] = {}
        own = {f.name: f for f in fields(cls)}
        for f in fields(cls):
            if f.name == "policy":
                continue
            raw = get(f.name.upper())
            if raw is None:
                continue
            if f.name in ("symbols", "urls"):
                values[f.name] = _split(raw)
            elif f.name in ("buffer_size", "partitions"):
                values[f.name] = int(raw)
            elif f.name == "metrics_port":
                values[f.name] = int(raw) if raw not in ("", "none", "off") else None
            elif isinstance(own[f.name].default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes")
            else:
                values[f.name] = raw
        policy = ClientPolicy()
        for env_name, attr in _POLICY_ENV.items():
            raw = get(env_name)
            if raw is not None:
                current = getattr(policy, attr)
                setattr(
                    policy,
                    attr,
                    int(raw)
                    if isinstance(current, int) and not isinstance(current, bool)
                    else float(raw),
                )
        values["policy"] = policy
        for k, v in overrides.items():
            if v is None:
                continue
            if k in _POLICY_ENV.values():
                setattr(values["policy"], k, v)
            else:
                values[k] = v
        return cls(**values)

    def with_(self, **changes: Any) -> IngestConfig:
        return replace(self, **changes)


@dataclass
class BinanceConfig(IngestConfig):
    exchange: ClassVar[str] = "BINANCE"
    default_symbols: ClassVar[tuple[str, ...]] = ("BTC/USDT", "ETH/USDT")
    binance_stream: str = "trade"  # or aggTrade

    def adapter(self) -> ExchangeAdapter:
        return BinanceAdapter(self.symbols, stream=self.binance_stream)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> IngestConfig:
        env = os.environ if env is None else env
        if "K2_BINANCE_STREAM" in env:
            overrides.setdefault("binance_stream", env["K2_BINANCE_STREAM"])
        return super().from_env(env, **overrides)


@dataclass
class KrakenConfig(IngestConfig):
    exchange: ClassVar[str] = "KRAKEN"
    default_symbols: ClassVar[tuple[str, ...]] = ("BTC/USD", "ETH/USD")
    kraken_snapshot: bool = False

    def adapter(self) -> ExchangeAdapter:
        return KrakenAdapter(self.symbols, snapshot=self.kraken_snapshot)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> IngestConfig:
        env = os.environ if env is None else env
        if "K2_KRAKEN_SNAPSHOT" in env:
            overrides.setdefault(
                "kraken_snapshot", env["K2_KRAKEN_SNAPSHOT"].lower() in ("1", "true", "yes")
            )
        return super().from_env(env, **overrides)


CONFIGS: dict[str, type[IngestConfig]] = {"binance": BinanceConfig, "kraken": KrakenConfig}


def config_for(
    exchange: str, env: Mapping[str, str] | None = None, **overrides: Any
) -> IngestConfig:
    try:
        cls = CONFIGS[exchange.lower()]
    except KeyError:
        raise ValueError(f"unknown exchange {exchange!r}; known: {', '.join(CONFIGS)}") from None
    return cls.from_env(env, **overrides)


def config_from_feed(
    feed: Any, bootstrap_servers: str, schema_registry_url: str, **overrides: Any
) -> IngestConfig:
    """The config of one ExchangeFeed (k2.pipeline) against given Kafka/registry endpoints."""
    return config_for(
        feed.exchange,
        symbols=tuple(feed.symbols),
        urls=(feed.endpoint,) if feed.endpoint else None,
        topic=feed.topic,
        bootstrap_servers=bootstrap_servers,
        schema_registry_url=schema_registry_url,
        **overrides,
    )


def ingest_argv(config: IngestConfig, python: str | None = None) -> list[str]:
    """argv running `config` as its own process (what `k2 up` may spawn)."""
    import sys

    argv = [
        python or sys.executable,
        "-m",
        "k2_ingestors.cli",
        config.exchange.lower(),
        "--symbols",
        ",".join(config.symbols),
    ]
    for url in config.urls:
        argv += ["--url", url]
    argv += [
        "--sink",
        config.sink,
        "--bootstrap-servers",
        config.bootstrap_servers,
        "--schema-registry-url",
        config.schema_registry_url,
        "--topic",
        config.topic,
    ]
    if config.metrics_port is not None:
        argv += ["--metrics-port", str(config.metrics_port)]
    return argv
