"""`k2 replay-server {binance|kraken}`: serve recorded or synthetic trades over the exchange's protocol."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

from k2_ingestors.replay.server import Fault, ReplayServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exchange", choices=("binance", "kraken"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed on stdout)")
    parser.add_argument("--capture", help="recorded frames: cryptofeed line format or JSON lines")
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="tape positions (trades, or captured frames) per second per connection",
    )
    parser.add_argument(
        "--count", type=int, help="stop serving trades after this many tape positions"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--first-id", type=int, help="trade id of the first trade per symbol (a resumed run picks a new range)"
    )
    parser.add_argument(
        "--invalid-every", type=int, metavar="N", help="every Nth trade has price 0 (for the dead-letter path)"
    )
    parser.add_argument(
        "--symbols", help="comma-separated canonical symbols of the synthetic market"
    )
    parser.add_argument("--batch", type=int, help="trades per Kraken frame (synthetic)")
    parser.add_argument(
        "--max-lifetime",
        type=float,
        help="close connections after this many seconds (Binance: 24h)",
    )
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=1.0,
        help="seconds between serverShutdown and the close",
    )
    for kind in ("drop", "malformed", "shutdown"):
        parser.add_argument(
            f"--fault-{kind}-at",
            type=int,
            action="append",
            default=[],
            metavar="POS",
            help=f"inject '{kind}' at tape position POS",
        )
    parser.add_argument("--fault-stall-at", type=int, action="append", default=[], metavar="POS")
    parser.add_argument("--fault-stall-seconds", type=float, default=5.0)
    parser.add_argument("--fault-skip-at", type=int, action="append", default=[], metavar="POS")
    parser.add_argument("--fault-skip-count", type=int, default=10)
    parser.add_argument("--log-level", default="WARNING")


def server_from_args(args: argparse.Namespace) -> ReplayServer:
    faults = [
        Fault(k, at=p)
        for k in ("drop", "malformed", "shutdown")
        for p in getattr(args, f"fault_{k}_at")
    ]
    faults += [Fault("stall", at=p, arg=args.fault_stall_seconds) for p in args.fault_stall_at]
    faults += [Fault("skip", at=p, arg=args.fault_skip_count) for p in args.fault_skip_at]
    return ReplayServer(
        args.exchange,
        host=args.host,
        port=args.port,
        symbols=tuple(s.strip() for s in args.symbols.split(",")) if args.symbols else None,
        seed=args.seed,
        first_id=args.first_id,
        invalid_every=args.invalid_every,
        rate=args.rate,
        count=args.count,
        batch=args.batch,
        capture=args.capture,
        max_lifetime=args.max_lifetime,
        ping_interval=args.ping_interval,
        shutdown_grace=args.shutdown_grace,
        faults=faults,
    )


async def _serve(server: ReplayServer) -> None:
    await server.start()
    print(
        json.dumps({"exchange": server.exchange, "url": server.url, "port": server.port}),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    print(
        json.dumps(
            {
                "served": server.expected_count(),
                "frames_sent": server.frames_sent,
                "connections": server.connections_total,
            }
        ),
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(server_from_args(args)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k2 replay-server", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
