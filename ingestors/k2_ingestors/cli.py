"""`k2 ingest {binance|kraken}`: stream an exchange's trades into Kafka (or JSON lines)."""

from __future__ import annotations

import argparse
import logging
import sys

from k2_ingestors.config import CONFIGS, SINKS, IngestConfig, config_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exchange", choices=sorted(CONFIGS))
    parser.add_argument(
        "--symbols",
        help="comma-separated canonical symbols, e.g. BTC/USDT,ETH/USDT (env K2_SYMBOLS)",
    )
    parser.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help="endpoint (repeat for failover order); default: the exchange's",
    )
    parser.add_argument(
        "--sink",
        choices=SINKS,
        help="kafka (default) or jsonl (v3 records as JSON lines on stdout)",
    )
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (env K2_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument(
        "--schema-registry-url", help="Schema Registry URL (env K2_SCHEMA_REGISTRY_URL)"
    )
    parser.add_argument("--topic", help="trades topic (default market.crypto.trades.<exchange>)")
    parser.add_argument(
        "--metrics-port", type=int, help="serve /healthz /readyz /metrics on this port (0 = any)"
    )
    parser.add_argument("--buffer-size", type=int, help="bound of the in-memory buffer, in trades")
    parser.add_argument(
        "--rotate-after", type=float, help="seconds before a connection is proactively replaced"
    )
    parser.add_argument(
        "--stale-after", type=float, help="reconnect when nothing arrived for this many seconds"
    )
    parser.add_argument(
        "--binance-stream",
        choices=("trade", "aggTrade"),
        help="Binance stream type (default trade)",
    )
    parser.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    symbols = (
        tuple(s.strip() for s in args.symbols.split(",") if s.strip()) if args.symbols else None
    )
    overrides = {
        "symbols": symbols,
        "urls": tuple(args.urls) if args.urls else None,
        "sink": args.sink,
        "bootstrap_servers": args.bootstrap_servers,
        "schema_registry_url": args.schema_registry_url,
        "topic": args.topic,
        "metrics_port": args.metrics_port,
        "buffer_size": args.buffer_size,
        "rotate_after": args.rotate_after,
        "stale_after": args.stale_after,
    }
    if args.exchange == "binance":
        overrides["binance_stream"] = getattr(args, "binance_stream", None)
    return config_for(args.exchange, **overrides)


def run(args: argparse.Namespace) -> int:
    from k2_ingestors.app import Ingestor

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"k2 ingest: {exc}", file=sys.stderr)
        return 2
    Ingestor(config).run_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k2 ingest", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
