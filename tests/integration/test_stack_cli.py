"""`k2 stack up/status/down` as a user runs them: processes and ports come and go cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from k2.stack.base import pid_alive, recorded_pids, tcp_open

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def k2(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k2.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def _ports(endpoints: dict[str, dict[str, Any]]) -> set[int]:
    ports: set[int] = set()
    for service in endpoints.values():
        for value in service.values():
            if isinstance(value, str) and "://" in value:
                port = urlparse(value).port
                if port:
                    ports.add(port)
            elif isinstance(value, str) and value.startswith("127.0.0.1:"):
                ports.add(int(value.rsplit(":", 1)[1]))
    return ports


def _pids(stack_dir: Path) -> dict[str, int]:
    pids: dict[str, int] = {}
    for run_dir in sorted(p for p in stack_dir.iterdir() if p.is_dir()):
        pids.update({f"{run_dir.name}/{k}": v for k, v in recorded_pids(run_dir).items()})
    return pids


def test_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    pids: dict[str, int] = {}
    ports: set[int] = set()
    up = k2("stack", "up", "--dir", str(stack_dir), "--services", "kafka,registry,catalog")
    try:
        assert up.returncode == 0, up.stderr
        endpoints = json.loads(up.stdout)
        assert set(endpoints) == {"kafka", "registry", "catalog"}
        assert json.loads((stack_dir / "stack.json").read_text()) == endpoints
        assert endpoints["registry"]["url"].endswith("/apis/ccompat/v7")
        assert endpoints["catalog"]["warehouse"].startswith("file:///")
        ports = _ports(endpoints)
        assert len(ports) >= 3 and all(tcp_open(p) for p in ports)
        pids = _pids(stack_dir)
        assert set(pids) == {"kafka/kafka", "registry/registry", "catalog/catalog"}
        assert all(pid_alive(pid) for pid in pids.values())

        status = k2("stack", "status", "--dir", str(stack_dir), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert all(s["healthy"] for s in json.loads(status.stdout).values())

        again = k2("stack", "up", "--dir", str(stack_dir), "--services", "kafka,registry,catalog")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) == endpoints  # reused, not restarted
        assert _pids(stack_dir) == pids
        assert "already running" in again.stderr
    finally:
        down = k2("stack", "down", "--dir", str(stack_dir))
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not any(tcp_open(p) for p in ports)
    assert _pids(stack_dir) == {}
    assert json.loads((stack_dir / "stack.json").read_text()) == {}
    status = k2("stack", "status", "--dir", str(stack_dir))
    assert "no services" in status.stdout


def test_failing_service_is_reported_and_the_others_stopped(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    up = k2(
        "stack",
        "up",
        "--dir",
        str(stack_dir),
        "--services",
        "kafka,catalog",
        env={"K2_CATALOG_JAVA_OPTS": "-XX:+K2NoSuchOption"},
    )
    try:
        assert up.returncode != 0
        assert "catalog failed to start" in up.stderr
        assert "Unrecognized VM option 'K2NoSuchOption'" in up.stderr  # the log's tail
        assert "stopped again: kafka" in up.stderr
        assert json.loads((stack_dir / "stack.json").read_text()) == {}
        assert _pids(stack_dir) == {}  # kafka was started, then stopped again
        kafka_ports = json.loads((stack_dir / "kafka" / "ports.json").read_text())
        assert not any(tcp_open(p) for p in kafka_ports.values())
    finally:
        k2("stack", "down", "--dir", str(stack_dir))


def test_unknown_service_is_a_usage_error(tmp_path: Path) -> None:
    result = k2("stack", "up", "--dir", str(tmp_path), "--services", "kafka,zookeeper")
    assert result.returncode == 2
    assert "unknown service(s) zookeeper" in result.stderr
