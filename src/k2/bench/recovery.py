"""`k2 bench recovery`: time from SIGKILL of a job to the restarted job committing again.

Trades flow at a steady rate (default 500/s) for the whole run. For each layer measured
(default bronze, silver, gold; --quick bronze only) the layers upstream of it run as
queries of this process's Spark driver, and the layer itself runs as `k2 job LAYER`,
a subprocess, as on a laptop (`k2 up`) or in a pod. Once it has committed two batches
its whole process group (Python driver and JVM) gets SIGKILL, and a new `k2 job LAYER`
starts at once from the same checkpoint. Measured from the kill:

- query_started_s: the restarted driver's streaming query is running;
- first_commit_s: its first micro-batch is in the checkpoint's commit log (the job
  "committing again": possibly the replay of the batch the kill interrupted);
- first_new_snapshot_s: the layer's table has a snapshot it did not have at the kill.

Target: first_commit_s < 60 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from k2.pipeline import LAYERS

TARGET_S = 60.0


def add_arguments(group: Any) -> None:
    group.add_argument(
        "--recovery-layers",
        default=None,
        help="comma-separated layers (default bronze,silver,gold; --quick bronze)",
    )
    group.add_argument(
        "--recovery-rate", type=float, default=500.0, help="trades/s while measuring"
    )
    group.add_argument(
        "--recovery-stack-dir",
        type=Path,
        default=None,
        help="use the services of this running stack",
    )


def commits(checkpoint: str) -> int:
    d = Path(checkpoint) / "commits"
    return len(list(d.glob("[0-9]*"))) if d.is_dir() else 0


def spawn(path: Path, layer: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "job", layer, "-f", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _steady(checkpoint: str, want: int, proc: subprocess.Popen[bytes]) -> Any:
    """A check for wait_for: `want` commits reached, or the job exited."""

    def check() -> bool:
        return commits(checkpoint) >= want or proc.poll() is not None

    return check


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from k2.bench.latency import SteadyProducer
    from k2.catalog import load_catalog
    from k2.contracts.tables import BRONZE, GOLD, SILVERS, TableSpec
    from k2_jobs import bronze, gold, silver, testdata
    from k2_jobs.benchkit import bench_workspace, say, wait_for
    from k2_jobs.common import JobOptions, run_query, session

    layers = (
        [x.strip() for x in args.recovery_layers.split(",") if x.strip()]
        if args.recovery_layers
        else (["bronze"] if args.quick else list(LAYERS))
    )
    targets: dict[str, TableSpec] = {"bronze": BRONZE, "silver": SILVERS[0], "gold": GOLD}
    jobs = {"bronze": bronze, "silver": silver, "gold": gold}
    from k2.pipeline import DEFAULT_TRIGGERS

    with bench_workspace(
        "recovery",
        ["kafka", "registry", "catalog"],
        stack_dir=args.recovery_stack_dir,
        triggers=DEFAULT_TRIGGERS,
    ) as ws:
        p = ws.pipeline
        catalog = load_catalog(p.catalog_uri, p.warehouse)
        producer = testdata.Producer(p.kafka_bootstrap, p.schema_registry_url, topics=ws.topics)
        feed = SteadyProducer(producer, args.recovery_rate, seconds=3600)
        feed.thread.start()
        spark = session(p, "recovery-upstream")
        upstream: dict[str, threading.Thread] = {}
        results: dict[str, Any] = {}
        proc: subprocess.Popen[bytes] | None = None
        try:
            for layer in layers:
                for up in LAYERS[: LAYERS.index(layer)]:
                    if up not in upstream:
                        say(f"{up} runs in this driver while {layer} is measured")
                        # run_query: restarts the query after SPARK-55271 (the job this
                        # layer's measurement stopped may have left a batch to replay)
                        upstream[up] = threading.Thread(
                            target=run_query,
                            args=(spark, p, JobOptions(), jobs[up].start),
                            daemon=True,
                        )
                        upstream[up].start()
                checkpoint = p.checkpoint(layer)
                ident = f"{p.namespace}.{targets[layer].name}"
                log = ws.dir / f"{layer}.log"
                say(f"{layer}: starting `k2 job {layer}`, waiting for two commits…")
                before = commits(checkpoint)
                proc = spawn(ws.path, layer, log)
                if not wait_for(_steady(checkpoint, before + 2, proc), 300, 0.1):
                    raise RuntimeError(
                        f"{layer}: no two commits in 300s:\n{log.read_text()[-3000:]}"
                    )
                if proc.poll() is not None:
                    raise RuntimeError(f"{layer}: job exited:\n{log.read_text()[-3000:]}")
                snapshots = len(catalog.load_table(ident).snapshots())
                log_size = log.stat().st_size
                killed_at = time.monotonic()
                stop(proc, signal.SIGKILL)
                at_kill = commits(checkpoint)
                say(f"{layer}: SIGKILL after {at_kill - before} commits; restarting…")
                proc = spawn(ws.path, layer, log)
                marks: dict[str, float] = {}
                deadline = killed_at + 300
                while len(marks) < 3 and time.monotonic() < deadline and proc.poll() is None:
                    now = time.monotonic() - killed_at
                    if "query_started_s" not in marks:
                        with open(log, "rb") as f:
                            f.seek(log_size)
                            if b"started" in f.read():
                                marks["query_started_s"] = now
                    if "first_commit_s" not in marks and commits(checkpoint) > at_kill:
                        marks["first_commit_s"] = now
                    if (
                        "first_new_snapshot_s" not in marks
                        and len(catalog.load_table(ident).snapshots()) > snapshots
                    ):
                        marks["first_new_snapshot_s"] = now
                    time.sleep(0.1)
                died = proc.poll() is not None  # a failure the job did not recover from
                stop(proc)
                after = log.read_bytes()[log_size:].decode("utf-8", "replace")
                results[layer] = {k: round(v, 2) for k, v in sorted(marks.items())} | {
                    "failed_batches": int(died),
                    "query_restarts_spark_55271": after.count("hit SPARK-55271"),
                }
                say(f"{layer}: {results[layer]}")
        finally:
            feed.stop.set()
            feed.thread.join()
            if proc is not None:
                stop(proc, signal.SIGKILL)
            for q in spark.streams.active:
                q.stop()
            for t in upstream.values():
                t.join(60)
            spark.stop()
        worst = max((r.get("first_commit_s", float("inf")) for r in results.values()), default=None)
        return {
            "layers": results,
            "rate": args.recovery_rate,
            "triggers": {k: v.trigger for k, v in p.jobs.items()},
            "target_s": TARGET_S,
            "failed_batches": sum(r["failed_batches"] for r in results.values()),
            "meets_target": worst is not None
            and worst < TARGET_S
            and all(r["failed_batches"] == 0 for r in results.values()),
        }
