"""Apache Kafka: one combined KRaft node (broker + controller) on 127.0.0.1.

Jars from build/jvm/kafka/pom.xml. Under its run dir: server.properties, log4j2.properties,
ports.json (the ports are kept across restarts while free, so endpoints stay stable),
data/ (the log dirs, formatted once) and kafka.log.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k2.stack import jvm
from k2.stack.base import (
    HOST,
    Service,
    ServiceFailed,
    free_port,
    log_tail,
    spawn,
    tcp_open,
    wait_until,
)

START_TIMEOUT = 90.0

LOG4J2 = """\
# Written by k2.stack.kafka: everything to stdout (the run dir's kafka.log).
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# configuration dumps and per-request chatter
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.utils.name = org.apache.kafka.common.utils.AppInfoParser
logger.utils.level = WARN
"""


def server_properties(
    *, port: int, controller_port: int, log_dir: Path, node_id: int = 1
) -> dict[str, str]:
    """Settings of a single combined KRaft node for local runs and tests (pure)."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # one node: every internal topic has one replica, and few partitions (fast first join)
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "min.insync.replicas": "1",
        "default.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "num.partitions": "1",
        "delete.topic.enable": "true",
        # a laptop: few threads
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
    }


def render_properties(props: Mapping[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id() -> str:
    """22-character base64url of a random UUID, as `kafka-storage.sh random-uuid` prints."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _ports(run_dir: Path) -> dict[str, int]:
    """The ports used last time if all are still free, else new ones; saved in ports.json."""
    saved = run_dir / "ports.json"
    try:
        ports = {k: int(v) for k, v in json.loads(saved.read_text()).items()}
        if set(ports) == {"broker", "controller"} and not any(map(tcp_open, ports.values())):
            return ports
    except (OSError, ValueError, AttributeError):
        pass
    ports = {"broker": free_port(), "controller": free_port()}
    while ports["controller"] == ports["broker"]:
        ports["controller"] = free_port()
    saved.write_text(json.dumps(ports))
    return ports


def broker_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """The broker answers metadata requests and lists itself (i.e. it is registered)."""
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.rpartition(":")
    if not tcp_open(int(port), host):  # spares librdkafka's connection-refused noise
        return False
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": int(timeout * 1000),
            "log_level": 0,
        }
    )
    metadata = admin.list_topics(timeout=timeout)
    return bool(metadata.brokers)


class KafkaService(Service):
    name = "kafka"

    def prepare(self) -> None:
        jvm.resolve("kafka")
        jvm.find_java(17)

    def start(self, run_dir: Path, env: Mapping[str, Any]) -> dict[str, Any]:
        run_dir.mkdir(parents=True, exist_ok=True)
        java = jvm.find_java(17)
        cp = jvm.classpath("kafka")
        ports = _ports(run_dir)
        data = run_dir / "data"
        props_file = run_dir / "server.properties"
        props_file.write_text(
            render_properties(
                server_properties(
                    port=ports["broker"], controller_port=ports["controller"], log_dir=data
                )
            )
        )
        log4j = run_dir / "log4j2.properties"
        log4j.write_text(LOG4J2)
        jvm_base = [java, f"-Dlog4j2.configurationFile={log4j}", "-Djava.awt.headless=true"]
        if not (data / "meta.properties").exists():
            fmt_log = run_dir / "kafka-format.log"
            with open(fmt_log, "wb") as out:
                proc = subprocess.run(
                    [
                        *jvm_base,
                        "-Xmx256m",
                        "-cp",
                        cp,
                        "kafka.tools.StorageTool",
                        "format",
                        "-t",
                        new_cluster_id(),
                        "-c",
                        str(props_file),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            if proc.returncode != 0:
                raise ServiceFailed(f"formatting Kafka storage failed:\n{log_tail(fmt_log)}")
        pid = spawn(
            [
                *jvm_base,
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                *jvm.java_opts("kafka"),
                "-cp",
                cp,
                "kafka.Kafka",
                str(props_file),
            ],
            name="kafka",
            run_dir=run_dir,
        )
        bootstrap = f"{HOST}:{ports['broker']}"
        wait_until(
            lambda: broker_ready(bootstrap),
            timeout=START_TIMEOUT,
            what="kafka",
            log=run_dir / "kafka.log",
            pid=pid,
            interval=0.5,
        )
        return {"bootstrap_servers": bootstrap}

    def healthy(self, run_dir: Path, endpoints: Mapping[str, Any]) -> bool:
        if not super().healthy(run_dir, endpoints):
            return False
        try:
            return broker_ready(str(endpoints["bootstrap_servers"]))
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False
