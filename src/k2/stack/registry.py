"""Schema Registry: Apicurio Registry 3 (Quarkus fast-jar), in-memory, on 127.0.0.1.

Clients speak the Confluent Schema Registry API at /apis/ccompat/v7 (confluent-kafka's
SchemaRegistryClient works against it). Storage is H2 in a file under the run dir, so
schema ids survive a restart (bronze keeps ids in every payload's header). Apicurio 3.3 is compiled for Java 21, so it runs on the first
Java >= 21 found (K2_JAVA_HOME, JAVA_HOME, PATH, /usr/lib/jvm/*).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k2.stack import jvm
from k2.stack.base import HOST, Service, ServiceFailed, free_port, http_ok, spawn, wait_until

JAVA_MIN = 21
START_TIMEOUT = 120.0

# Quarkus/Apicurio settings (system properties): loopback only, nothing that phones home or
# needs the network, small pools for a laptop.
SETTINGS: dict[str, str] = {
    "quarkus.http.host": HOST,
    "quarkus.management.host": HOST,
    "quarkus.otel.sdk.disabled": "true",  # no OTLP exporter (its default is localhost:4317)
    "quarkus.oidc.tenant-enabled": "false",  # no identity provider
    "quarkus.http.access-log.enabled": "false",
    "quarkus.log.console.format": "%d{HH:mm:ss,SSS} %-5p [%c{2.}] %s%e%n",
    "apicurio.storage.kind": "sql",
    "apicurio.storage.sql.kind": "h2",  # an H2 file in the run dir: schema ids survive restarts
    "apicurio.datasource.jdbc.initial-size": "2",
    "apicurio.datasource.jdbc.min-size": "2",
    "apicurio.datasource.jdbc.max-size": "10",
    "apicurio.rest.artifact.deletion.enabled": "true",
}


def registry_argv(
    java: str, dist: Path, run_dir: Path, *, port: int, management_port: int
) -> list[str]:
    """The command line starting Apicurio from its unpacked distribution (pure)."""
    props = {
        **SETTINGS,
        "quarkus.http.port": str(port),
        "quarkus.management.port": str(management_port),
        "apicurio.datasource.url": f"jdbc:h2:file:{run_dir / 'data' / 'registry'};DB_CLOSE_ON_EXIT=FALSE",
        "apicurio.storage.snapshot.location": str(run_dir / "tmp"),
        "apicurio.import.work-dir": str(run_dir / "tmp"),
        "java.io.tmpdir": str(run_dir / "tmp"),
    }
    return [
        java,
        "-Xms64m",
        "-Xmx384m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        *(f"-D{k}={v}" for k, v in props.items()),
        *jvm.java_opts("registry"),
        "-jar",
        str(dist / "quarkus-run.jar"),
    ]


class RegistryService(Service):
    name = "registry"

    def prepare(self) -> None:
        jvm.resolve("registry")
        jvm.find_java(JAVA_MIN)

    def start(self, run_dir: Path, env: Mapping[str, Any]) -> dict[str, Any]:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "tmp").mkdir(exist_ok=True)
        dist = jvm.resolve("registry") / "dist"
        if not (dist / "quarkus-run.jar").is_file():
            raise ServiceFailed(f"no quarkus-run.jar in {dist}")
        port, management_port = free_port(), free_port()
        while management_port == port:
            management_port = free_port()
        argv = registry_argv(
            jvm.find_java(JAVA_MIN), dist, run_dir, port=port, management_port=management_port
        )
        pid = spawn(argv, name="registry", run_dir=run_dir, cwd=run_dir)
        base = f"http://{HOST}:{port}"
        endpoints = {
            "url": f"{base}/apis/ccompat/v7",
            "registry_url": f"{base}/apis/registry/v3",
            "health_url": f"http://{HOST}:{management_port}/health/ready",
        }
        wait_until(
            lambda: self._probe(endpoints),
            timeout=START_TIMEOUT,
            what="registry",
            log=run_dir / "registry.log",
            pid=pid,
            interval=0.5,
        )
        return endpoints

    @staticmethod
    def _probe(endpoints: Mapping[str, Any]) -> bool:
        return http_ok(str(endpoints["health_url"])) and http_ok(f"{endpoints['url']}/subjects")

    def healthy(self, run_dir: Path, endpoints: Mapping[str, Any]) -> bool:
        return super().healthy(run_dir, endpoints) and self._probe(endpoints)
