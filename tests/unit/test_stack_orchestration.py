"""k2.stack.stack.Stack with stand-in services (real processes: `sleep`), no JVM."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from k2.stack.base import Service, ServiceFailed, pid_alive, spawn, wait_until
from k2.stack.stack import Stack, StackError


class Sleeper(Service):
    name = "sleeper"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.prepared = 0
        self.started = 0

    def prepare(self) -> None:
        self.prepared += 1

    def start(self, run_dir: Path, env: Mapping[str, Any]) -> dict[str, Any]:
        self.started += 1
        code = (
            "import sys; print('boom: bad config', flush=True); sys.exit(3)"
            if self.fail
            else ("import time; time.sleep(120)")
        )
        pid = spawn([sys.executable, "-c", code], name="proc", run_dir=run_dir)
        log = run_dir / "proc.log"
        wait_until(lambda: not self.fail, timeout=10, what=f"{run_dir.name}", log=log, pid=pid)
        return {"pid": pid}


def _stack(tmp_path: Path, **services: Service) -> Stack:
    return Stack(tmp_path / "stack", services=services)


def test_up_reuse_status_down(tmp_path: Path) -> None:
    a, b = Sleeper(), Sleeper()
    stack = _stack(tmp_path, a=a, b=b)
    first = stack.up(["a", "b"])
    assert set(first) == {"a", "b"} and all(pid_alive(e["pid"]) for e in first.values())
    assert stack.endpoints() == first
    assert stack.up(["a", "b"]) == first  # healthy: reused
    assert a.started == b.started == 1
    status = stack.status()
    assert all(s["healthy"] for s in status.values())

    assert stack.down() == ["a", "b"]
    assert not any(pid_alive(e["pid"]) for e in first.values())
    assert stack.endpoints() == {} and stack.status() == {}


def test_dead_service_is_started_again(tmp_path: Path) -> None:
    a = Sleeper()
    stack = _stack(tmp_path, a=a)
    pid = stack.up(["a"])["a"]["pid"]
    stack.service("a").stop(stack.run_dir("a"))  # dies behind the stack's back
    assert stack.status()["a"]["healthy"] is False
    again = stack.up(["a"])["a"]["pid"]
    assert again != pid and pid_alive(again) and a.started == 2
    stack.down()


def test_failure_stops_what_this_call_started(tmp_path: Path) -> None:
    stack = _stack(tmp_path, ok=Sleeper(), keep=Sleeper(), bad=Sleeper(fail=True))
    kept = stack.up(["keep"])["keep"]["pid"]
    with pytest.raises(StackError) as err:
        stack.up(["keep", "ok", "bad"])
    message = str(err.value)
    assert "bad failed to start" in message and "boom: bad config" in message
    assert "stopped again: ok" in message
    assert set(stack.endpoints()) == {"keep"} and pid_alive(kept)  # already running: kept
    assert not list((tmp_path / "stack" / "ok").glob("*.pid"))
    stack.down(purge=True)
    assert not pid_alive(kept) and not (tmp_path / "stack" / "keep").exists()


def test_wait_until_reports_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("line 1\nthe reason\n")
    with pytest.raises(ServiceFailed, match="the reason"):
        wait_until(lambda: False, timeout=0.3, what="x", log=log)
