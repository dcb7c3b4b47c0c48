"""`k2 up`: the whole pipeline on this machine, from the same declaration the operator reads.

    local stack (Kafka, Apicurio, Iceberg REST catalog)      k2.stack
    -> tables created/evolved from the specs                 k2.iceberg_ddl
    -> replay servers speaking Binance/Kraken (or --live)    k2_ingestors.replay
    -> one ingestor per ExchangeFeed                         k2_ingestors
    -> bronze, silver, gold Spark jobs, in one driver        k2_jobs (`k2 job all`)
    -> gold compaction of closed hours                       k2.gold_compaction

Every process is a child with its own log under the run directory; state (Kafka logs,
catalog, warehouse, checkpoints) lives there too, so running `k2 up` again resumes.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from k2 import pipeline as declaration
from k2.paths import REPO_ROOT, data_dir
from k2.stack.base import HOST, free_port, pid_alive, spawn, stop_pid_file

DEFAULT_DECLARATION = REPO_ROOT / "examples" / "pipeline.yaml"
SERVICES = ["kafka", "registry", "catalog"]
REPLAY_PATH = {"BINANCE": "/stream", "KRAKEN": "/v2"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--file", type=Path, default=DEFAULT_DECLARATION, help="pipeline declaration"
    )
    parser.add_argument(
        "--dir", type=Path, help="run directory (default .k2/up); kept between runs"
    )
    parser.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="connect to the real exchanges instead of replay servers",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="replayed trades/s per exchange")
    parser.add_argument(
        "--inject-faults",
        action="store_true",
        help="replay servers also send malformed frames, invalid trades and dropped connections",
    )
    parser.add_argument("--fresh", action="store_true", help="delete the run directory first")
    parser.add_argument(
        "--json-status", type=Path, help="also write each status sample to this file"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print a status line every 10 s instead of a live view"
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="on stop, let bronze, silver and gold catch up with everything produced before exiting",
    )


@dataclass
class Child:
    name: str
    argv: list[str]


def localize(
    docs: list[dict[str, Any]], endpoints: dict[str, dict[str, Any]], run_dir: Path
) -> list[dict[str, Any]]:
    """The declaration rewritten to point at the local stack (pure).

    Only connection details change; feeds, tables, triggers and resources are the user's.
    """
    out = []
    for doc in docs:
        doc = json.loads(json.dumps(doc))  # deep copy of plain YAML data
        if doc.get("kind") == "MedallionPipeline":
            spec = doc.setdefault("spec", {})
            kafka = spec.setdefault("kafka", {})
            kafka["bootstrapServers"] = endpoints["kafka"]["bootstrap_servers"]
            kafka["schemaRegistryUrl"] = endpoints["registry"]["url"]
            spec["catalog"] = {
                "uri": endpoints["catalog"]["uri"],
                "warehouse": endpoints["catalog"]["warehouse"],
            }
            spec["checkpointLocation"] = (run_dir / "checkpoints").as_uri()
        out.append(doc)
    return out


INVALID_EVERY = 500  # with --inject-faults: one trade in 500 has price 0


def replay_args(
    exchange: str, symbols: tuple[str, ...], port: int, rate: float, first_id: int, faults: bool
) -> list[str]:
    """A replay server's command line (pure). `first_id` moves each run onto fresh trade
    ids, so a resumed run adds trades instead of re-sending ones gold already holds."""
    argv = [
        "replay-server",
        exchange.lower(),
        "--port",
        str(port),
        "--rate",
        str(rate),
        "--symbols",
        ",".join(symbols),
        "--seed",
        str(first_id % 1_000_003),
        "--first-id",
        str(first_id),
    ]
    if faults:
        # Tape positions: malformed frames and a dropped connection early enough to show in a short run.
        argv += [
            "--fault-malformed-at",
            "150",
            "--fault-malformed-at",
            "900",
            "--fault-drop-at",
            "400",
            "--invalid-every",
            str(INVALID_EVERY),
        ]
    return argv


def ingest_args(
    feed: declaration.ExchangeFeed, p: declaration.Pipeline, url: str | None, metrics_port: int
) -> list[str]:
    argv = [
        "ingest",
        feed.exchange.lower(),
        "--symbols",
        ",".join(feed.symbols),
        "--sink",
        "kafka",
        "--bootstrap-servers",
        p.kafka_bootstrap,
        "--schema-registry-url",
        p.schema_registry_url,
        "--topic",
        feed.topic,
        "--metrics-port",
        str(metrics_port),
    ]
    if url:
        argv += ["--url", url]
    return argv


def compact_args(p: declaration.Pipeline, resolved: Path) -> list[str]:
    """`k2 tables compact` in a loop, every compaction.intervalSeconds (k2 up's compaction)."""
    c = p.compaction
    return [
        "tables",
        "compact",
        "-f",
        str(resolved),
        "--catalog-uri",
        p.catalog_uri,
        "--warehouse",
        p.warehouse,
        "--every",
        f"{c.interval_seconds:g}",
        "--grace",
        f"{c.grace_minutes:g}",
    ]


class LocalRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir: Path = (args.dir or data_dir() / "up").resolve()
        self.procs_dir = self.dir / "procs"
        # The default run shares the default stack, so `k2 stack up` + `k2 query` read
        # the same tables after `k2 up` has stopped.
        self.stack_dir: Path = self.dir / "stack" if args.dir else data_dir() / "stack"
        self.children: list[str] = []
        self.metrics_urls: dict[str, str] = {}

    def say(self, msg: str) -> None:
        print(f"k2 up: {msg}", file=sys.stderr, flush=True)

    def spawn(self, name: str, k2_argv: list[str]) -> None:
        run_dir = self.procs_dir / name
        stop_pid_file(run_dir / f"{name}.pid")  # a leftover of a killed run
        spawn([sys.executable, "-m", "k2.cli", *k2_argv], name=name, run_dir=run_dir)
        self.children.append(name)

    def alive(self) -> dict[str, bool]:
        out = {}
        for name in self.children:
            try:
                pid = int((self.procs_dir / name / f"{name}.pid").read_text())
                out[name] = pid_alive(pid)
            except (OSError, ValueError):
                out[name] = False
        return out

    def start(self) -> tuple[declaration.Pipeline, Any]:
        from k2 import iceberg_ddl
        from k2.catalog import load_catalog
        from k2.stack.stack import Stack
        from k2.tables_cli import table_specs

        raw = [d for d in yaml.safe_load_all(self.args.file.read_text()) if d]
        declaration.parse_documents(
            raw
        )  # fail fast, with the field named, before starting anything
        self.dir.mkdir(parents=True, exist_ok=True)
        self.say(f"run directory {self.dir}")
        self.say("starting Kafka, Schema Registry and Iceberg REST catalog…")
        endpoints = Stack(self.stack_dir).up(SERVICES)
        docs = localize(raw, endpoints, self.dir)
        resolved = self.dir / "pipeline.resolved.yaml"
        resolved.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        p = declaration.parse_documents(docs)

        catalog = load_catalog(p.catalog_uri, p.warehouse)
        for spec in table_specs(p):
            changes = iceberg_ddl.plan_in(catalog, spec)
            if changes:
                iceberg_ddl.apply(catalog, changes)
                self.say(f"table {spec.identifier}: {len(changes)} change(s) applied")

        for i, feed in enumerate(p.feeds):
            url = None
            if not self.args.live:
                port = free_port()
                self.spawn(
                    f"replay-{feed.name}",
                    replay_args(
                        feed.exchange,
                        feed.symbols,
                        port,
                        self.args.rate,
                        first_id=int(time.time()) * 1000 + i,
                        faults=self.args.inject_faults,
                    ),
                )
                url = f"ws://{HOST}:{port}{REPLAY_PATH[feed.exchange]}"
            metrics_port = free_port()
            self.metrics_urls[feed.exchange] = f"http://{HOST}:{metrics_port}/metrics"
            self.spawn(f"ingest-{feed.name}", ingest_args(feed, p, url, metrics_port))

        # One Spark driver for the three layers: one JVM, not three, on a small machine.
        self.say("starting the bronze, silver and gold Spark jobs (one driver)…")
        self.spawn("job-all", ["job", "all", "-f", str(resolved)])
        # closed gold hours -> one file per exchange and symbol (k2.gold_compaction),
        # as the declaration's spec.compaction says
        if p.compaction.enabled:
            self.spawn("compact-gold", compact_args(p, resolved))
        return p, catalog

    def stop(self, drain: bool = False) -> None:
        """Sources first, so the jobs can drain what was produced; the stack last."""
        import subprocess

        from k2.stack.stack import Stack

        self.say("stopping (state is kept; run `k2 up` again to resume)…")
        for prefix in ("replay-", "ingest-", "job-", "compact-"):
            for name in [c for c in self.children if c.startswith(prefix)]:
                stop_pid_file(self.procs_dir / name / f"{name}.pid", timeout=60.0)
        resolved = self.dir / "pipeline.resolved.yaml"
        if drain and resolved.is_file():
            for layer in declaration.LAYERS:
                self.say(f"draining {layer}…")
                log = self.procs_dir / f"drain-{layer}.log"
                with log.open("ab") as out:
                    rc = subprocess.call(
                        [
                            sys.executable,
                            "-m",
                            "k2.cli",
                            "job",
                            layer,
                            "-f",
                            str(resolved),
                            "--available-now",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                if rc != 0:
                    self.say(f"draining {layer} failed (exit {rc}); see {log}")
                    break
        Stack(self.stack_dir).down()
        self.say("stopped")


def run(args: argparse.Namespace) -> int:
    from k2.status_view import Collector, render

    if not args.file.is_file():
        print(f"k2 up: no declaration at {args.file}", file=sys.stderr)
        return 2
    local = LocalRun(args)
    if args.fresh and local.dir.exists():
        import shutil

        from k2.stack.stack import Stack

        Stack(local.stack_dir).down()
        shutil.rmtree(local.stack_dir, ignore_errors=True)
        shutil.rmtree(local.dir, ignore_errors=True)
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        p, catalog = local.start()
        collector = Collector(catalog, p.namespace, local.metrics_urls)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        interactive = sys.stdout.isatty() and not args.quiet
        last_print = 0.0
        while not stopping and (deadline is None or time.monotonic() < deadline):
            status = collector.collect(local.alive())
            if args.json_status:
                with args.json_status.open("a") as f:
                    f.write(json.dumps(status.as_dict()) + "\n")
            if interactive:
                print("\033[2J\033[H" + render(status), flush=True)
            elif time.monotonic() - last_print >= 10:
                print(render(status) + "\n", flush=True)
                last_print = time.monotonic()
            time.sleep(2.0)
        final = collector.collect(local.alive())
        print(render(final), flush=True)
        return 0
    except declaration.DeclarationError as exc:
        print(f"k2 up: invalid declaration: {exc}", file=sys.stderr)
        return 2
    finally:
        local.stop(drain=args.drain)
