"""What every local service implements, and the process plumbing they share.

A service is prepared once (artifacts fetched or built into the cache, idempotent),
then started in the background under a run directory, where it keeps its logs,
pid files and data. `start` returns only when the service is healthy, with the
endpoints other code needs (JSON-able). Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

HOST = "127.0.0.1"


class ServiceFailed(RuntimeError):
    """A service did not become healthy; the message carries the tail of its log."""


class Service(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def prepare(self) -> None:
        """Fetch or build what the service runs from (cached; prints progress)."""

    @abc.abstractmethod
    def start(self, run_dir: Path, env: Mapping[str, Any]) -> dict[str, Any]:
        """Start in the background, wait until healthy, return endpoints.

        `env` holds the endpoints of services started before this one
        (e.g. the catalog may need nothing, a job may need Kafka).
        """

    def stop(self, run_dir: Path) -> None:
        """Stop every process this service recorded under run_dir."""
        for pid_file in sorted(run_dir.glob("*.pid")):
            stop_pid_file(pid_file)

    def healthy(self, run_dir: Path, endpoints: Mapping[str, Any]) -> bool:
        """Is the service started earlier under run_dir (with these endpoints) still serving?

        The default only checks that every recorded process is alive; services override it
        with a real probe. Used by `k2 stack status` and to reuse a running service.
        """
        pids = recorded_pids(run_dir)
        return bool(pids) and all(pid_alive(pid) for pid in pids.values())


def recorded_pids(run_dir: Path) -> dict[str, int]:
    """name -> pid of the processes recorded under run_dir (<name>.pid files)."""
    result: dict[str, int] = {}
    for pid_file in sorted(run_dir.glob("*.pid")):
        try:
            result[pid_file.stem] = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def spawn(
    argv: Sequence[str],
    *,
    name: str,
    run_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a detached process (own session) logging to run_dir/<name>.log; record its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    log.close()
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid_file(pid_file: Path, timeout: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout`, remove the pid file."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pid_alive(pid):
            with contextlib.suppress(ChildProcessError):  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if not pid_alive(pid):
            break
    pid_file.unlink(missing_ok=True)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log: Path | None = None,
    pid: int | None = None,
    interval: float = 0.25,
) -> None:
    """Poll `check` until true; fail early if `pid` died, with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        if pid is not None and not pid_alive(pid):
            raise ServiceFailed(f"{what} exited during start-up:\n{log_tail(log) if log else ''}")
        time.sleep(interval)
    raise ServiceFailed(f"{what} not healthy after {timeout:.0f}s:\n{log_tail(log) if log else ''}")


def tcp_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            status: int = resp.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError):
        return False
