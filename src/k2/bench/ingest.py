"""`k2 bench ingest`: sustained trades/s of one ingestor process, replay server -> Kafka.

A synthetic replay server runs in its own process at a rate above what one ingestor
can take (TCP backpressure paces it), the ingestor runs in its own process against a
real Kafka broker + registry (started through k2.stack unless --ingest-stack-dir
points at a running stack), and the benchmark samples the ingestor's /metrics:
trades acknowledged by Kafka per second over the measuring window, the ingestor's
CPU% (psutil; 100% = one core), and produce->ack latency percentiles (sampled).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil

TARGET = 30_000


def add_arguments(group: Any) -> None:
    group.add_argument("--ingest-exchange", choices=("binance", "kraken", "both"), default="both")
    group.add_argument(
        "--ingest-seconds",
        type=float,
        default=None,
        help="measuring window (default 25, --quick 8)",
    )
    group.add_argument(
        "--ingest-rate", type=float, default=80_000.0, help="replay server rate (positions/s)"
    )
    group.add_argument(
        "--ingest-stack-dir",
        type=Path,
        default=None,
        help="use the Kafka/registry of this running stack",
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            labels = m.group(2) or ""
            q = re.search(r'quantile="([^"]+)"', labels)
            key = m.group(1) + (f"[{q.group(1)}]" if q else "")
            out[key] = float(m.group(3))
    return out


def _wait_metrics(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ingestor exited with {proc.returncode}")
        try:
            m = _metrics(port)
            if m.get("k2_ingest_delivered_total", 0) > 0:
                return m
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("ingestor never delivered a trade")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    exchange: str,
    kafka: dict[str, Any],
    registry: dict[str, Any],
    seconds: float,
    rate: float,
    warmup: float,
) -> dict[str, Any]:
    py = sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [py, "-m", "k2_ingestors.replay.cli", exchange, "--rate", str(rate), "--seed", "7"],
        stdout=subprocess.PIPE,
        env=env,
    )
    ingestor: subprocess.Popen[bytes] | None = None
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        port = _free_port()
        topic = f"bench.{uuid.uuid4().hex[:8]}.trades.{exchange}"
        ingestor = subprocess.Popen(
            [
                py, "-m", "k2_ingestors.cli", exchange,
                "--url", info["url"],
                "--bootstrap-servers", kafka["bootstrap_servers"],
                "--schema-registry-url", registry["url"],
                "--topic", topic,
                "--metrics-port", str(port),
                "--log-level", "WARNING",
            ],
            env=env,
        )  # fmt: skip
        _wait_metrics(port, ingestor)
        time.sleep(warmup)
        ps, ss = psutil.Process(ingestor.pid), psutil.Process(server.pid)
        ps.cpu_percent(None)
        ss.cpu_percent(None)
        m0, t0 = _metrics(port), time.monotonic()
        samples = []
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5.0, seconds))
            m = _metrics(port)
            samples.append(
                (
                    time.monotonic() - t0,
                    m["k2_ingest_delivered_total"] - m0["k2_ingest_delivered_total"],
                )
            )
        m1, t1 = _metrics(port), time.monotonic()
        cpu, server_cpu = ps.cpu_percent(None), ss.cpu_percent(None)
        delivered = m1["k2_ingest_delivered_total"] - m0["k2_ingest_delivered_total"]
        frames = m1["k2_ingest_frames_total"] - m0["k2_ingest_frames_total"]
        tps = delivered / (t1 - t0)
        return {
            "exchange": exchange,
            "trades_per_s": round(tps),
            "frames_per_s": round(frames / (t1 - t0)),
            "ingestor_cpu_percent": round(cpu, 1),
            "replay_server_cpu_percent": round(server_cpu, 1),
            "us_cpu_per_trade": round(cpu / 100 / tps * 1e6, 2) if tps else None,
            "produce_latency_ms_p50": m1.get("k2_ingest_produce_latency_ms[0.5]"),
            "produce_latency_ms_p99": m1.get("k2_ingest_produce_latency_ms[0.99]"),
            "delivery_errors": m1.get("k2_ingest_delivery_errors_total", 0),
            "duplicates": m1.get("k2_ingest_duplicates_total", 0),
            "gaps": m1.get("k2_ingest_gaps_total", 0),
            "producer_queue_full": m1.get("k2_ingest_producer_queue_full_total", 0),
            "backpressure_seconds": m1.get("k2_ingest_backpressure_seconds_total", 0),
            "window_s": round(t1 - t0, 1),
            "cumulative": samples,
            "target_trades_per_s": TARGET,
            "meets_target": tps >= TARGET,
            "load_average": os.getloadavg(),
        }
    finally:
        if ingestor is not None:
            _stop(ingestor)
        _stop(server)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from k2.stack.stack import Stack

    quick = bool(getattr(args, "quick", False))
    seconds = args.ingest_seconds or (8.0 if quick else 25.0)
    warmup = 2.0 if quick else 4.0
    exchanges = ("binance", "kraken") if args.ingest_exchange == "both" else (args.ingest_exchange,)
    own_stack = args.ingest_stack_dir is None
    stack_dir = args.ingest_stack_dir or Path(tempfile.mkdtemp(prefix="k2-bench-ingest-"))
    stack = Stack(stack_dir)
    try:
        endpoints = stack.up(["kafka", "registry"])
        results = [
            measure(
                ex, endpoints["kafka"], endpoints["registry"], seconds, args.ingest_rate, warmup
            )
            for ex in exchanges
        ]
    finally:
        if own_stack:
            stack.down(purge=True)
            shutil.rmtree(stack_dir, ignore_errors=True)
    return {
        "unit": "trades/s acknowledged by Kafka, one ingestor process",
        "results": {r["exchange"]: r for r in results},
        "notes": "CPU% is of one core; the replay server runs in a separate process on the same 2 cores, as does the Kafka broker.",
    }
